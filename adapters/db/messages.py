"""Messages and their append-only event log: accept, read one back, apply status changes.

The dispatcher's side (due, claim, outcomes) is adapters/db/outbox.py; lists and support
timelines are adapters/db/listing.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, RowMapping, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.prepared import Prepared
from adapters.db.tables import message_events as events
from adapters.db.tables import messages
from domain.content import MessageKind
from domain.model import ErrorSource, Message, MessageError, StatusChange
from domain.status import MessageStatus


class EventKind:
    REQUEST = "request"  # the accepted API request and its window decision
    STATUS = "status"  # a status change (or a late one, kept with applied=false)
    ATTEMPT = "attempt"  # one Cloud API call


# The hot paths' statements are built once, and on SQLite run below SQLAlchemy's execution
# layer (adapters/db/prepared.py).
_INSERT_EVENT = Prepared(
    events.insert(),
    columns=["message_id", "correlation_id", "at", "kind", "status", "applied", "detail"],
)
_INSERT_MESSAGE = Prepared(
    messages.insert(),
    columns=[
        "valid_until",
        "id",
        "client_id",
        "sender_id",
        "wa_id",
        "kind",
        "payload",
        "status",
        "attempts",
        "next_attempt_at",
        "correlation_id",
        "metadata",
        "created_at",
        "updated_at",
    ],
)


def event_row(
    *,
    message_id: str | None,
    correlation_id: str | None,
    at: datetime,
    kind: str,
    status: MessageStatus | None = None,
    applied: bool | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns of one event, as :func:`add_event` and :func:`add_events` write them."""
    return {
        "message_id": message_id,
        "correlation_id": correlation_id,
        "at": at,
        "kind": kind,
        "status": None if status is None else str(status),
        "applied": applied,
        "detail": None if detail is None else dict(detail),
    }


async def add_event(
    conn: AsyncConnection,
    *,
    message_id: str | None,
    correlation_id: str | None,
    at: datetime,
    kind: str,
    status: MessageStatus | None = None,
    applied: bool | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """One :func:`event_row`."""
    row = event_row(
        message_id=message_id,
        correlation_id=correlation_id,
        at=at,
        kind=kind,
        status=status,
        applied=applied,
        detail=detail,
    )
    await _INSERT_EVENT.run(conn, row)


async def insert_message(
    conn: AsyncConnection,
    *,
    message_id: str,
    client_id: str,
    sender_id: str,
    wa_id: str,
    kind: MessageKind,
    payload: Mapping[str, Any],
    correlation_id: str,
    metadata: Mapping[str, str],
    now: datetime,
    request_detail: Mapping[str, Any],
    valid_until: datetime | None = None,
) -> None:
    await _INSERT_MESSAGE.run(
        conn,
        {
            "valid_until": valid_until,
            "id": message_id,
            "client_id": client_id,
            "sender_id": sender_id,
            "wa_id": wa_id,
            "kind": str(kind),
            "payload": dict(payload),
            "status": str(MessageStatus.QUEUED),
            "attempts": 0,
            "next_attempt_at": now,
            "correlation_id": correlation_id,
            "metadata": dict(metadata) or None,
            "created_at": now,
            "updated_at": now,
        },
    )
    common: dict[str, Any] = {"message_id": message_id, "correlation_id": correlation_id, "at": now}
    await add_events(
        conn,
        [
            event_row(**common, kind=EventKind.REQUEST, detail=request_detail),
            event_row(
                **common,
                kind=EventKind.STATUS,
                status=MessageStatus.QUEUED,
                applied=True,
                detail={"source": "router"},
            ),
        ],
    )


def _error(m: Mapping[str, Any] | RowMapping) -> MessageError | None:
    if m["error_code"] is None:
        return None
    code: int | str = m["error_code"]
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return MessageError(
        code=code,
        title=m["error_title"] or "",
        detail=m["error_detail"],
        source=ErrorSource(m["error_source"] or ErrorSource.ROUTER),
    )


def message_of(m: Mapping[str, Any] | RowMapping, history: tuple[StatusChange, ...]) -> Message:
    """The message of a row of :data:`PUBLIC_COLUMNS`, as a mapping."""
    return Message(
        id=m["id"],
        client_id=m["client_id"],
        sender_id=m["sender_id"],
        wa_id=m["wa_id"],
        kind=MessageKind(m["kind"]),
        status=MessageStatus(m["status"]),
        correlation_id=m["correlation_id"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        attempts=m["attempts"],
        wamid=m["wamid"],
        error=_error(m),
        metadata=dict(m["metadata"] or {}),
        history=history,
        valid_until=m["valid_until"],
    )


PUBLIC_COLUMNS = [c for c in messages.c if c.name not in ("payload",)]
_GET_MESSAGE = Prepared(
    select(*PUBLIC_COLUMNS).where(
        messages.c.id == bindparam("message_id"), messages.c.client_id == bindparam("client_id")
    )
)
_GET_HISTORY = Prepared(
    select(events.c.status, events.c.at)
    .where(
        events.c.message_id == bindparam("message_id"),
        events.c.kind == EventKind.STATUS,
        events.c.applied.is_(True),
    )
    .order_by(events.c.id)
)


async def get_message(conn: AsyncConnection, message_id: str, *, client_id: str) -> Message | None:
    row = await _GET_MESSAGE.first(conn, {"message_id": message_id, "client_id": client_id})
    if row is None:
        return None
    changes = await _GET_HISTORY.rows(conn, {"message_id": message_id})
    history = tuple(StatusChange(status=MessageStatus(s), at=at) for s, at in changes)
    return message_of(dict(zip(_GET_MESSAGE.names, row, strict=True)), history)


def error_columns(error: MessageError) -> dict[str, str | None]:
    return {
        "error_code": str(error.code),
        "error_title": error.title[:500],
        "error_detail": error.detail,
        "error_source": str(error.source),
    }


StatusRow = Row[Any, Any, Any, Any, Any, Any, Any]

_STATUS_COLUMNS = (
    messages.c.id,
    messages.c.status,
    messages.c.correlation_id,
    messages.c.sender_id,
    messages.c.wa_id,
    messages.c.accepted_at,
    messages.c.wamid,
)
# What a status report needs of its message, locked until the transaction ends (built once:
# every status of a webhook batch runs one of them).
_STATUS_BY_ID = (
    select(*_STATUS_COLUMNS)
    .where(messages.c.id == bindparam("b_id"), messages.c.sender_id == bindparam("b_sender"))
    .with_for_update()
)
# The SET columns are the keys of the parameters each call passes.
_UPDATE_MESSAGE = update(messages).where(messages.c.id == bindparam("b_id"))
_STORE_WAMID = (
    update(messages)
    .where(and_(messages.c.id == bindparam("b_id"), messages.c.wamid.is_(None)))
    .values(wamid=bindparam("b_wamid"))
)


_STATUSES_BY_WAMIDS = (
    select(*_STATUS_COLUMNS)
    .where(messages.c.wamid.in_(bindparam("wamids", expanding=True)))
    .order_by(messages.c.id)  # rows locked in one order, whichever batch locks them
    .with_for_update()
)


async def statuses_of_wamids(conn: AsyncConnection, wamids: Sequence[str]) -> dict[str, StatusRow]:
    """The status rows of many wamids in one query: wamid → row, for those we know."""
    if not wamids:
        return {}
    rows = await conn.execute(_STATUSES_BY_WAMIDS, {"wamids": list(wamids)})
    return {row.wamid: row for row in rows}


async def status_of_wamid(conn: AsyncConnection, wamid: str) -> StatusRow | None:
    """:func:`statuses_of_wamids` of one."""
    return (await statuses_of_wamids(conn, [wamid])).get(wamid)


async def add_events(conn: AsyncConnection, events_: Sequence[Mapping[str, Any]]) -> None:
    """Several events in one INSERT (each an :func:`event_row`)."""
    if events_:
        await _INSERT_EVENT.run_many(conn, events_)


async def update_messages(conn: AsyncConnection, changes: Mapping[str, Mapping[str, Any]]) -> None:
    """message id → the columns to set: one UPDATE for each set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for message_id, values in changes.items():
        groups.setdefault(tuple(sorted(values)), []).append({"b_id": message_id, **values})
    for params in groups.values():
        await conn.execute(_UPDATE_MESSAGE, params)


async def status_of_id(conn: AsyncConnection, message_id: str, sender_id: str) -> StatusRow | None:
    params = {"b_id": message_id, "b_sender": sender_id}
    return (await conn.execute(_STATUS_BY_ID, params)).first()


def status_columns(
    status: MessageStatus,
    *,
    now: datetime,
    error: MessageError | None = None,
    clear_error: bool = False,
) -> dict[str, Any]:
    """The columns a status change sets."""
    values: dict[str, Any] = {"status": str(status), "updated_at": now}
    if clear_error:
        values.update(error_code=None, error_title=None, error_detail=None, error_source=None)
    if error is not None:
        values.update(error_columns(error))
    return values


async def store_wamid(conn: AsyncConnection, message_id: str, wamid: str) -> None:
    """The wamid of a message that has none yet (a status came before our own record)."""
    await conn.execute(_STORE_WAMID, {"b_id": message_id, "b_wamid": wamid})


# --- reads for pollers and support ----------------------------------------------------------
