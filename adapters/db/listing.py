"""Reads for pollers and support: pages of a client's messages and a correlation's events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.messages import PUBLIC_COLUMNS, EventKind, message_of
from adapters.db.tables import clients as _clients
from adapters.db.tables import message_events as events
from adapters.db.tables import messages
from domain.model import Message, StatusChange
from domain.status import MessageStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageFilter:
    """What a client may narrow its message list by; ``None`` means "any"."""

    correlation_id: str | None = None
    status: MessageStatus | None = None
    wa_id: str | None = None
    sender_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagePage:
    messages: list[Message]
    more: bool  # at least one more message matches after the last one


async def list_messages(
    conn: AsyncConnection,
    *,
    client_id: str,
    filters: MessageFilter,
    before_id: str | None,
    limit: int,
) -> MessagePage:
    """One client's messages, newest first (ids are time-ordered), after the cursor ``before_id``.

    Two queries whatever the page size: the page (one row more than asked, to know whether
    another page follows), then the status histories of the page's messages."""
    conditions: list[ColumnElement[bool]] = [messages.c.client_id == client_id]
    if before_id is not None:
        conditions.append(messages.c.id < before_id)
    if filters.correlation_id is not None:
        conditions.append(messages.c.correlation_id == filters.correlation_id)
    if filters.status is not None:
        conditions.append(messages.c.status == str(filters.status))
    if filters.wa_id is not None:
        conditions.append(messages.c.wa_id == filters.wa_id)
    if filters.sender_id is not None:
        conditions.append(messages.c.sender_id == filters.sender_id)
    rows = (
        await conn.execute(
            select(*PUBLIC_COLUMNS)
            .where(*conditions)
            .order_by(messages.c.id.desc())
            .limit(limit + 1)
        )
    ).all()
    page, more = rows[:limit], len(rows) > limit
    if not page:
        return MessagePage(messages=[], more=False)
    histories: dict[str, list[StatusChange]] = {row.id: [] for row in page}
    changes = await conn.execute(
        select(events.c.message_id, events.c.status, events.c.at)
        .where(
            events.c.message_id.in_(list(histories)),
            events.c.kind == EventKind.STATUS,
            events.c.applied.is_(True),
        )
        .order_by(events.c.id)
    )
    for message_id, status, at in changes:
        histories[message_id].append(StatusChange(status=MessageStatus(status), at=at))
    return MessagePage(
        messages=[message_of(row._mapping, tuple(histories[row.id])) for row in page], more=more
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """One row of the event log as the support trace reads it, with what is known of the
    message it belongs to (nothing, for a refused request) and of the requesting client."""

    id: int
    at: datetime
    kind: str
    message_id: str | None
    status: str | None
    applied: bool | None
    detail: dict[str, Any]
    sender_id: str | None
    wa_id: str | None
    client_name: str | None


async def events_of_correlation(
    conn: AsyncConnection, correlation_id: str, *, limit: int
) -> list[StoredEvent]:
    """Up to ``limit`` events recorded under ``correlation_id``, in the order they were written
    (one query; ``message_events.correlation_id`` is indexed). Not scoped to a client: the
    caller's scope (support:read) is the gate."""
    request_client = events.c.detail["client_id"].as_string()
    rows = await conn.execute(
        select(
            events.c.id,
            events.c.at,
            events.c.kind,
            events.c.message_id,
            events.c.status,
            events.c.applied,
            events.c.detail,
            messages.c.sender_id,
            messages.c.wa_id,
            _clients.c.name.label("client_name"),
        )
        .select_from(
            events.outerjoin(messages, messages.c.id == events.c.message_id).outerjoin(
                _clients,
                and_(events.c.kind == EventKind.REQUEST, _clients.c.id == request_client),
            )
        )
        .where(events.c.correlation_id == correlation_id)
        .order_by(events.c.id)
        .limit(limit)
    )
    return [
        StoredEvent(
            id=r.id,
            at=r.at,
            kind=r.kind,
            message_id=r.message_id,
            status=r.status,
            applied=r.applied,
            detail=dict(r.detail or {}),
            sender_id=r.sender_id,
            wa_id=r.wa_id,
            client_name=r.client_name,
        )
        for r in rows
    ]
