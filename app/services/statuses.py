"""Applying a status report (webhook, or one parked until its wamid became known) to a message,
through the domain status machine: never backwards, every event kept."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import contacts as contact_repo
from adapters.db import messages as message_repo
from domain.errors import RE_ENGAGEMENT
from domain.model import ErrorSource, MessageError
from domain.status import MessageStatus, advance


def error_from_webhook(error: Mapping[str, Any] | None) -> MessageError | None:
    if not error:
        return None
    return MessageError(
        code=code if isinstance(code := error.get("code"), int | str) else "unknown",
        title=str(error.get("title") or error.get("message") or ""),
        detail=error.get("details"),
        source=ErrorSource.CLOUD_API,
    )


class StatusWrites:
    """The status changes of one webhook batch, written together when :meth:`flush` is
    called: one INSERT of all their events and one UPDATE per message and set of columns,
    instead of an INSERT and an UPDATE per status (a batch of 50 statuses was 150 statements).
    Whoever reads those rows back in the same transaction flushes first."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._changes: dict[str, dict[str, Any]] = {}

    def event(self, row: dict[str, Any]) -> None:
        """One event (a :func:`message_repo.event_row`)."""
        self._events.append(row)

    def change(self, message_id: str, values: Mapping[str, Any]) -> None:
        """Later changes of the same message override earlier ones, column by column."""
        self._changes.setdefault(message_id, {}).update(values)

    async def flush(self, conn: AsyncConnection) -> None:
        await message_repo.add_events(conn, self._events)
        await message_repo.update_messages(conn, self._changes)
        self._events.clear()
        self._changes.clear()


async def apply_status(
    conn: AsyncConnection,
    row: message_repo.StatusRow,
    *,
    current: MessageStatus,
    incoming: MessageStatus,
    at: datetime,
    error: Mapping[str, Any] | None,
    now: datetime,
    wamid: str | None = None,
    writes: StatusWrites | None = None,
) -> MessageStatus | None:
    """Apply ``incoming`` to the message of ``row`` (adapters/db/messages.py) if it moves it
    forward; always keep the event. Returns the new status, or None when the report was late or
    a duplicate. With ``writes`` the event and the change wait there for its flush (with a
    ``wamid`` to store, everything is written at once)."""
    message_id = row.id
    new = advance(current, incoming)
    detail: dict[str, Any] = {"source": "webhook"}
    if wamid is not None:
        detail["wamid"] = wamid
    if error:
        detail["error"] = dict(error)
    failure = error_from_webhook(error) if new is MessageStatus.FAILED else None
    # Reached the customer after all (multi-device): the earlier failure no longer holds.
    clear_error = current is MessageStatus.FAILED
    pending = writes if writes is not None and wamid is None else StatusWrites()
    pending.event(
        message_repo.event_row(
            message_id=message_id,
            correlation_id=row.correlation_id,
            at=at,
            kind=message_repo.EventKind.STATUS,
            status=incoming,
            applied=new is not None,
            detail=detail,
        )
    )
    if new is not None:
        if wamid is not None:
            # A status that beat our own wamid commit (found through biz_opaque_callback_data).
            await message_repo.store_wamid(conn, message_id, wamid)
        pending.change(
            message_id,
            message_repo.status_columns(new, now=now, error=failure, clear_error=clear_error),
        )
    if pending is not writes:
        await pending.flush(conn)
    if incoming is MessageStatus.FAILED and error and error.get("code") == RE_ENGAGEMENT:
        # Meta's own time of the refusal: a late redelivery cannot close a window the customer
        # has reopened since.
        await contact_repo.mark_window_closed(conn, row.sender_id, row.wa_id, at)
    return new


async def apply_parked(conn: AsyncConnection, *, wamid: str, now: datetime) -> None:
    """Apply the statuses that arrived before their wamid was known to us."""
    parked = await contact_repo.take_parked(conn, wamid)
    if not parked:
        return
    row = await message_repo.status_of_wamid(conn, wamid)
    if row is None:
        return
    current = MessageStatus(row.status)
    for status, at, error in parked:
        new = await apply_status(
            conn, row, current=current, incoming=MessageStatus(status), at=at, error=error, now=now
        )
        current = new or current
