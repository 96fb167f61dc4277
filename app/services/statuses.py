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


async def apply_status(
    conn: AsyncConnection,
    *,
    message_id: str,
    current: MessageStatus,
    correlation_id: str | None,
    sender_id: str,
    wa_id: str,
    incoming: MessageStatus,
    at: datetime,
    error: Mapping[str, Any] | None,
    now: datetime,
    wamid: str | None = None,
) -> MessageStatus | None:
    """Apply ``incoming`` if it moves the message forward; always keep the event. Returns the
    new status, or None when the report was late or a duplicate."""
    new = advance(current, incoming)
    detail: dict[str, Any] = {"source": "webhook"}
    if wamid is not None:
        detail["wamid"] = wamid
    if error:
        detail["error"] = dict(error)
    await message_repo.add_event(
        conn,
        message_id=message_id,
        correlation_id=correlation_id,
        at=at,
        kind=message_repo.EventKind.STATUS,
        status=incoming,
        applied=new is not None,
        detail=detail,
    )
    if new is not None:
        await message_repo.set_status(
            conn,
            message_id,
            status=new,
            now=now,
            wamid=wamid,
            error=error_from_webhook(error) if new is MessageStatus.FAILED else None,
            # Reached the customer after all (multi-device): the earlier failure no longer holds.
            clear_error=current is MessageStatus.FAILED,
        )
    if incoming is MessageStatus.FAILED and error and error.get("code") == RE_ENGAGEMENT:
        # Meta's own time of the refusal: a late redelivery cannot close a window the customer
        # has reopened since.
        await contact_repo.mark_window_closed(conn, sender_id, wa_id, at)
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
            conn,
            message_id=row.id,
            current=current,
            correlation_id=row.correlation_id,
            sender_id=row.sender_id,
            wa_id=row.wa_id,
            incoming=MessageStatus(status),
            at=at,
            error=error,
            now=now,
        )
        current = new or current
