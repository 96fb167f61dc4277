"""Messages and their append-only event log: accept, claim, record outcomes, read back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, RowMapping, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.tables import clients as _clients
from adapters.db.tables import contacts as _contacts
from adapters.db.tables import message_events as events
from adapters.db.tables import messages
from adapters.db.tables import senders as _senders
from domain.content import MessageKind
from domain.model import ErrorSource, Message, MessageError, OutboundJob, StatusChange
from domain.status import MessageStatus


class EventKind:
    REQUEST = "request"  # the accepted API request and its window decision
    STATUS = "status"  # a status change (or a late one, kept with applied=false)
    ATTEMPT = "attempt"  # one Cloud API call


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
    await conn.execute(
        events.insert().values(
            message_id=message_id,
            correlation_id=correlation_id,
            at=at,
            kind=kind,
            status=None if status is None else str(status),
            applied=applied,
            detail=None if detail is None else dict(detail),
        )
    )


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
) -> None:
    await conn.execute(
        messages.insert().values(
            id=message_id,
            client_id=client_id,
            sender_id=sender_id,
            wa_id=wa_id,
            kind=str(kind),
            payload=dict(payload),
            status=str(MessageStatus.QUEUED),
            attempts=0,
            next_attempt_at=now,
            correlation_id=correlation_id,
            metadata=dict(metadata) or None,
            created_at=now,
            updated_at=now,
        )
    )
    common = {"message_id": message_id, "correlation_id": correlation_id, "at": now}
    await conn.execute(
        events.insert(),
        [
            {
                **common,
                "kind": EventKind.REQUEST,
                "status": None,
                "applied": None,
                "detail": dict(request_detail),
            },
            {
                **common,
                "kind": EventKind.STATUS,
                "status": str(MessageStatus.QUEUED),
                "applied": True,
                "detail": {"source": "router"},
            },
        ],
    )


def _error(m: RowMapping) -> MessageError | None:
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


def _message(row: Row[Any], history: tuple[StatusChange, ...]) -> Message:
    m = row._mapping
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
    )


_PUBLIC_COLUMNS = [c for c in messages.c if c.name not in ("payload",)]


async def get_message(conn: AsyncConnection, message_id: str, *, client_id: str) -> Message | None:
    row = (
        await conn.execute(
            select(*_PUBLIC_COLUMNS).where(
                messages.c.id == message_id, messages.c.client_id == client_id
            )
        )
    ).first()
    if row is None:
        return None
    changes = await conn.execute(
        select(events.c.status, events.c.at)
        .where(
            events.c.message_id == message_id,
            events.c.kind == EventKind.STATUS,
            events.c.applied.is_(True),
        )
        .order_by(events.c.id)
    )
    history = tuple(StatusChange(status=MessageStatus(s), at=at) for s, at in changes)
    return _message(row, history)


def _due(m: Any, now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Due: queued, its backoff over, not leased (or its lease expired: a dispatcher crashed),
    its sender not paused."""
    paused = select(_senders.c.phone_number_id).where(_senders.c.paused_until > now)
    return (
        m.c.status == str(MessageStatus.QUEUED),
        m.c.next_attempt_at <= now,
        or_(m.c.lease_expires_at.is_(None), m.c.lease_expires_at <= now),
        m.c.sender_id.not_in(paused),
    )


def _in_turn(m: Any, now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Per-conversation order and pace: no older message to the same contact from the same
    sender is still queued (sending, backing off, or waiting), and the pair's pace allows one
    now."""
    older = messages.alias("older")
    return (
        ~exists()
        .where(
            older.c.sender_id == m.c.sender_id,
            older.c.wa_id == m.c.wa_id,
            older.c.status == str(MessageStatus.QUEUED),
            older.c.id < m.c.id,
        )
        .correlate(m),
        ~exists()
        .where(
            _contacts.c.sender_id == m.c.sender_id,
            _contacts.c.wa_id == m.c.wa_id,
            _contacts.c.next_send_at > now,
        )
        .correlate(m),
    )


async def any_due(conn: AsyncConnection, *, now: datetime) -> bool:
    """A cheap read, so an idle dispatcher does not take SQLite's write lock to find nothing."""
    return (
        await conn.scalar(select(messages.c.id).where(*_due(messages, now)).limit(1))
    ) is not None


async def due_senders(conn: AsyncConnection, *, now: datetime) -> list[str]:
    """Senders with at least one message that could be claimed now (a read)."""
    m = messages.alias("m")
    rows = await conn.execute(
        select(m.c.sender_id).where(*_due(m, now), *_in_turn(m, now)).distinct()
    )
    return sorted(row.sender_id for row in rows)


async def claim_due(
    conn: AsyncConnection,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    skip_locked: bool,
    sender_id: str | None = None,
) -> list[OutboundJob]:
    """Lease up to ``limit`` due messages to ``owner``, oldest first, at most one per
    conversation and only the oldest queued one of each (customers read in order). A lease
    that expired (its dispatcher crashed) makes its message due again."""
    m = messages.alias("m")
    conditions = [*_due(m, now), *_in_turn(m, now)]
    if sender_id is not None:
        conditions.append(m.c.sender_id == sender_id)
    due = select(m.c.id).where(*conditions).order_by(m.c.id).limit(limit)
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    rows = await conn.execute(
        update(messages)
        .where(messages.c.id.in_(due.scalar_subquery()))
        .values(lease_owner=owner, lease_expires_at=now + lease)
        .returning(
            messages.c.id,
            messages.c.sender_id,
            messages.c.wa_id,
            messages.c.kind,
            messages.c.payload,
            messages.c.attempts,
            messages.c.created_at,
            messages.c.correlation_id,
            messages.c.valid_until,
        )
    )
    jobs = [
        OutboundJob(
            id=r.id,
            sender_id=r.sender_id,
            wa_id=r.wa_id,
            kind=MessageKind(r.kind),
            payload=r.payload,
            attempts=r.attempts,
            created_at=r.created_at,
            correlation_id=r.correlation_id,
            lease_owner=owner,
            valid_until=r.valid_until,
        )
        for r in rows
    ]
    jobs.sort(key=lambda job: job.id)
    return jobs


def _held(job: OutboundJob) -> tuple[ColumnElement[bool], ...]:
    """Fencing: only the dispatcher that still holds the lease records the outcome."""
    return (messages.c.id == job.id, messages.c.lease_owner == job.lease_owner)


def _release(now: datetime) -> dict[str, Any]:
    return {
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": messages.c.attempts + 1,
        "updated_at": now,
    }


async def record_accepted(
    conn: AsyncConnection,
    job: OutboundJob,
    *,
    wamid: str,
    now: datetime,
    attempt: Mapping[str, Any],
) -> bool:
    """Store the wamid; ``queued`` becomes ``accepted`` unless a webhook already moved it on.
    Returns False if this dispatcher no longer held the lease (nothing is recorded then)."""
    await add_event(
        conn,
        message_id=job.id,
        correlation_id=job.correlation_id,
        at=now,
        kind=EventKind.ATTEMPT,
        detail=attempt,
    )
    result = await conn.execute(
        update(messages)
        .where(*_held(job), messages.c.status == str(MessageStatus.QUEUED))
        .values(status=str(MessageStatus.ACCEPTED), wamid=wamid, accepted_at=now, **_release(now))
    )
    if result.rowcount:
        await add_event(
            conn,
            message_id=job.id,
            correlation_id=job.correlation_id,
            at=now,
            kind=EventKind.STATUS,
            status=MessageStatus.ACCEPTED,
            applied=True,
            detail={"source": "cloud_api", "wamid": wamid},
        )
        return True
    # A status webhook moved it on first (found through our callback data): keep the wamid it
    # may already have stored.
    result = await conn.execute(
        update(messages)
        .where(*_held(job))
        .values(wamid=func.coalesce(messages.c.wamid, wamid), accepted_at=now, **_release(now))
    )
    return bool(result.rowcount)


async def record_retry(
    conn: AsyncConnection,
    job: OutboundJob,
    *,
    next_attempt_at: datetime,
    now: datetime,
    attempt: Mapping[str, Any],
    count_attempt: bool = True,
) -> bool:
    await add_event(
        conn,
        message_id=job.id,
        correlation_id=job.correlation_id,
        at=now,
        kind=EventKind.ATTEMPT,
        detail=attempt,
    )
    values = _release(now)
    if not count_attempt:
        values.pop("attempts")
    result = await conn.execute(
        update(messages).where(*_held(job)).values(next_attempt_at=next_attempt_at, **values)
    )
    return bool(result.rowcount)


async def record_failed(
    conn: AsyncConnection,
    job: OutboundJob,
    *,
    error: MessageError,
    now: datetime,
    attempt: Mapping[str, Any] | None,
) -> bool:
    """Fail a message that never got a wamid (the router or the synchronous API refused it)."""
    if attempt is not None:
        await add_event(
            conn,
            message_id=job.id,
            correlation_id=job.correlation_id,
            at=now,
            kind=EventKind.ATTEMPT,
            detail=attempt,
        )
    values = _release(now)
    if attempt is None:
        values.pop("attempts")
    result = await conn.execute(
        update(messages)
        .where(*_held(job), messages.c.status == str(MessageStatus.QUEUED))
        .values(
            status=str(MessageStatus.FAILED),
            error_code=str(error.code),
            error_title=error.title[:500],
            error_detail=error.detail,
            error_source=str(error.source),
            **values,
        )
    )
    if result.rowcount:
        await add_event(
            conn,
            message_id=job.id,
            correlation_id=job.correlation_id,
            at=now,
            kind=EventKind.STATUS,
            status=MessageStatus.FAILED,
            applied=True,
            detail={"source": str(error.source), "code": error.code},
        )
        return True
    result = await conn.execute(
        update(messages).where(*_held(job)).values(lease_owner=None, lease_expires_at=None)
    )
    return bool(result.rowcount)


async def status_of_wamid(
    conn: AsyncConnection, wamid: str
) -> Row[Any, Any, Any, Any, Any, Any] | None:
    return (
        await conn.execute(
            select(
                messages.c.id,
                messages.c.status,
                messages.c.correlation_id,
                messages.c.sender_id,
                messages.c.wa_id,
                messages.c.accepted_at,
            )
            .where(messages.c.wamid == wamid)
            .with_for_update()
        )
    ).first()


async def status_of_id(
    conn: AsyncConnection, message_id: str, sender_id: str
) -> Row[Any, Any, Any, Any, Any, Any] | None:
    return (
        await conn.execute(
            select(
                messages.c.id,
                messages.c.status,
                messages.c.correlation_id,
                messages.c.sender_id,
                messages.c.wa_id,
                messages.c.accepted_at,
            )
            .where(messages.c.id == message_id, messages.c.sender_id == sender_id)
            .with_for_update()
        )
    ).first()


async def set_status(
    conn: AsyncConnection,
    message_id: str,
    *,
    status: MessageStatus,
    now: datetime,
    wamid: str | None = None,
    error: MessageError | None = None,
    clear_error: bool = False,
) -> None:
    values: dict[str, Any] = {"status": str(status), "updated_at": now}
    if clear_error:
        values.update(error_code=None, error_title=None, error_detail=None, error_source=None)
    if error is not None:
        values.update(
            error_code=str(error.code),
            error_title=error.title[:500],
            error_detail=error.detail,
            error_source=str(error.source),
        )
    stmt = update(messages).where(messages.c.id == message_id)
    if wamid is not None:
        # A status that beat our own wamid commit (found through biz_opaque_callback_data).
        await conn.execute(
            update(messages)
            .where(and_(messages.c.id == message_id, messages.c.wamid.is_(None)))
            .values(wamid=wamid)
        )
    await conn.execute(stmt.values(**values))


# --- reads for pollers and support ----------------------------------------------------------


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
            select(*_PUBLIC_COLUMNS)
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
        messages=[_message(row, tuple(histories[row.id])) for row in page], more=more
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
