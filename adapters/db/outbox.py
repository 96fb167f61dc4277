"""The dispatcher's side of the messages table: what is due (in turn, per conversation), claims
with leases, and the fenced record of each attempt's outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Update,
    bindparam,
    column,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.messages import EventKind, add_event, add_events, error_columns, event_row
from adapters.db.prepared import Prepared
from adapters.db.tables import QUEUED_STATUS, UtcDateTime, messages
from adapters.db.tables import contacts as _contacts
from adapters.db.tables import senders as _senders
from domain.content import MessageKind
from domain.model import MessageError, OutboundJob
from domain.status import MessageStatus


def _due(m: Any, now: datetime | ColumnElement[datetime]) -> tuple[ColumnElement[bool], ...]:
    """Due: queued, its backoff over, not leased (or its lease expired: a dispatcher crashed),
    its sender not paused."""
    paused = select(_senders.c.phone_number_id).where(_senders.c.paused_until > now)
    return (
        m.c.status == QUEUED_STATUS,
        m.c.next_attempt_at <= now,
        or_(m.c.lease_expires_at.is_(None), m.c.lease_expires_at <= now),
        m.c.sender_id.not_in(paused),
    )


def _in_turn(m: Any, now: ColumnElement[datetime]) -> tuple[ColumnElement[bool], ...]:
    """Per-conversation order and pace: ``m`` is the oldest queued message of its pair (none
    older is still sending, backing off or waiting), and the pair's pace allows one now.

    Both are correlated scalar subqueries, which PostgreSQL runs as one index lookup per row
    (ix_messages_pair, the contacts key) whatever its statistics say. As NOT EXISTS they were
    anti-joins, and with the statistics of a table that had just filled up (8,000 queued rows
    estimated at 6) the planner joined them by the sender alone: a claim took 11 s."""
    oldest = (
        select(func.min(messages.c.id))
        .where(
            messages.c.sender_id == m.c.sender_id,
            messages.c.wa_id == m.c.wa_id,
            messages.c.status == QUEUED_STATUS,
        )
        .correlate(m)
        .scalar_subquery()
    )
    paced = (
        select(_contacts.c.next_send_at)
        .where(_contacts.c.sender_id == m.c.sender_id, _contacts.c.wa_id == m.c.wa_id)
        .correlate(m)
        .scalar_subquery()
    )
    return (m.c.id == oldest, func.coalesce(paced, now) <= now)


async def any_due(conn: AsyncConnection, *, now: datetime) -> bool:
    """A cheap read, so an idle dispatcher does not take SQLite's write lock to find nothing."""
    return (
        await conn.scalar(select(messages.c.id).where(*_due(messages, now)).limit(1))
    ) is not None


# The dispatcher's statements run on every pass: built once (as the accept path's are), with
# the time, the owner and the limit bound.
_AT = bindparam("b_at", type_=UtcDateTime())


def _due_senders() -> Prepared:
    m = messages.alias("m")
    first_claimable = (
        select(m.c.id)
        .where(m.c.sender_id == _senders.c.phone_number_id, *_due(m, _AT), *_in_turn(m, _AT))
        .limit(1)
        .scalar_subquery()
    )  # not EXISTS: PostgreSQL made that a semi-join that read every queued row first
    return Prepared(
        select(_senders.c.phone_number_id)
        .where(first_claimable.is_not(None))
        .order_by(_senders.c.phone_number_id)
    )


_DUE_SENDERS = _due_senders()


async def due_senders(conn: AsyncConnection, *, now: datetime) -> list[str]:
    """Senders with at least one message that could be claimed now (a read). One lookup per
    registered sender (every message has one), each stopping at its first claimable message
    in ix_messages_queue: a DISTINCT over the messages read the whole queue on every pass."""
    return [sender_id for (sender_id,) in await _DUE_SENDERS.rows(conn, {"b_at": now})]


def _claim(*, one_sender: bool, skip_locked: bool) -> Prepared:
    m = messages.alias("m")
    conditions = [*_due(m, _AT), *_in_turn(m, _AT)]
    if one_sender:  # one sender's oldest, in ix_messages_queue order (no sort)
        conditions.append(m.c.sender_id == bindparam("b_sender"))
    due = select(m.c.id).where(*conditions).order_by(m.c.id).limit(bindparam("b_limit"))
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return Prepared(
        update(messages)
        .where(messages.c.id.in_(due.scalar_subquery()))
        .values(
            lease_owner=bindparam("b_owner"),
            lease_expires_at=bindparam("b_until", type_=UtcDateTime()),
        )
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


_CLAIMS = {
    (one_sender, skip_locked): _claim(one_sender=one_sender, skip_locked=skip_locked)
    for one_sender in (False, True)
    for skip_locked in (False, True)
}


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
    claim = _CLAIMS[(sender_id is not None, skip_locked)]
    params = {"b_at": now, "b_owner": owner, "b_until": now + lease, "b_limit": limit}
    if sender_id is not None:
        params["b_sender"] = sender_id
    jobs = [
        OutboundJob(
            id=id_,
            sender_id=sender,
            wa_id=wa_id,
            kind=MessageKind(kind),
            payload=payload,
            attempts=attempts,
            created_at=created_at,
            correlation_id=correlation_id,
            lease_owner=owner,
            valid_until=valid_until,
        )
        for (
            id_,
            sender,
            wa_id,
            kind,
            payload,
            attempts,
            created_at,
            correlation_id,
            valid_until,
        ) in await claim.rows(conn, params)
    ]
    jobs.sort(key=lambda job: job.id)
    return jobs


async def _job_event(
    conn: AsyncConnection, job: OutboundJob, *, at: datetime, **event: Any
) -> None:
    """An event of a claimed message (its attempt, or the status the attempt led to)."""
    await add_event(conn, message_id=job.id, correlation_id=job.correlation_id, at=at, **event)


def _fenced(message_id: Any, owner: Any) -> tuple[ColumnElement[bool], ...]:
    """Fencing: only the dispatcher that still holds the lease records the outcome."""
    return (messages.c.id == message_id, messages.c.lease_owner == owner)


def _held(job: OutboundJob) -> tuple[ColumnElement[bool], ...]:
    return _fenced(job.id, job.lease_owner)


def _release(now: datetime | ColumnElement[datetime]) -> dict[str, Any]:
    return {
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": messages.c.attempts + 1,
        "updated_at": now,
    }


def _accepting(
    message_id: Any, owner: Any, wamid: Any, at: ColumnElement[datetime]
) -> tuple[Update, Update]:
    """The fenced UPDATEs that record a send Meta accepted: ``queued`` becomes ``accepted``;
    or, when a status webhook moved the message on first, only the wamid it may not have
    stored yet, and the lease released either way."""
    accept = (
        update(messages)
        .where(*_fenced(message_id, owner), messages.c.status == str(MessageStatus.QUEUED))
        .values(status=str(MessageStatus.ACCEPTED), wamid=wamid, accepted_at=at, **_release(at))
    )
    moved_on = (
        update(messages)
        .where(*_fenced(message_id, owner))
        .values(wamid=func.coalesce(messages.c.wamid, wamid), accepted_at=at, **_release(at))
    )
    return accept, moved_on


# One send at a time, prepared as the accept path's statements (adapters/db/prepared.py).
_ACCEPT, _ACCEPT_MOVED_ON = (
    Prepared(statement)
    for statement in _accepting(
        bindparam("b_id"),
        bindparam("b_owner"),
        bindparam("b_wamid"),
        bindparam("b_now", type_=messages.c.updated_at.type),
    )
)

# PostgreSQL records a whole batch of sends with one UPDATE (and one more for those a webhook
# moved on): a round trip per send was most of a batch's transaction. The sends come in as
# arrays, unnested into rows.
_SENT = (
    func.unnest(
        bindparam("b_ids", type_=ARRAY(String)),
        bindparam("b_owners", type_=ARRAY(String)),
        bindparam("b_wamids", type_=ARRAY(String)),
        bindparam("b_ats", type_=ARRAY(UtcDateTime())),
    )
    .table_valued(column("id"), column("owner"), column("wamid"), column("at", UtcDateTime()))
    .render_derived(name="sent")
)
_ACCEPT_ALL, _ACCEPT_ALL_MOVED_ON = (
    statement.returning(messages.c.id)
    for statement in _accepting(_SENT.c.id, _SENT.c.owner, _SENT.c.wamid, _SENT.c.at)
)


@dataclass(frozen=True, slots=True)
class AcceptedSend:
    """One send Meta accepted, to record."""

    job: OutboundJob
    wamid: str
    now: datetime
    attempt: Mapping[str, Any]


async def _accept(
    conn: AsyncConnection, sends: Sequence[AcceptedSend], *, moved_on: bool
) -> set[str]:
    """The ids of the sends whose fenced UPDATE (``_ACCEPT``, or ``_ACCEPT_MOVED_ON``) took."""
    if not sends:
        return set()
    if conn.dialect.name == "postgresql":
        arrays = {
            "b_ids": [s.job.id for s in sends],
            "b_owners": [s.job.lease_owner for s in sends],
            "b_wamids": [s.wamid for s in sends],
            "b_ats": [s.now for s in sends],
        }
        statement = _ACCEPT_ALL_MOVED_ON if moved_on else _ACCEPT_ALL
        return set((await conn.execute(statement, arrays)).scalars())
    prepared = _ACCEPT_MOVED_ON if moved_on else _ACCEPT
    took = set()
    for send in sends:
        params = {
            "b_id": send.job.id,
            "b_owner": send.job.lease_owner,
            "b_wamid": send.wamid,
            "b_now": send.now,
        }
        if await prepared.run(conn, params):
            took.add(send.job.id)
    return took


async def record_accepted_many(conn: AsyncConnection, sends: Sequence[AcceptedSend]) -> list[bool]:
    """Store each send's wamid (``queued`` becomes ``accepted`` unless a webhook already moved
    it on) with a fenced UPDATE, then all their events in one INSERT. Returns, for each,
    whether this dispatcher still held its lease (nothing but the attempt is recorded if not)."""
    accepted = await _accept(conn, sends, moved_on=False)
    moved_on = await _accept(conn, [s for s in sends if s.job.id not in accepted], moved_on=True)
    events: list[dict[str, Any]] = []
    for send in sends:
        common: dict[str, Any] = {
            "message_id": send.job.id,
            "correlation_id": send.job.correlation_id,
        }
        events.append(event_row(**common, at=send.now, kind=EventKind.ATTEMPT, detail=send.attempt))
        if send.job.id in accepted:
            events.append(
                event_row(
                    **common,
                    at=send.now,
                    kind=EventKind.STATUS,
                    status=MessageStatus.ACCEPTED,
                    applied=True,
                    detail={"source": "cloud_api", "wamid": send.wamid},
                )
            )
    await add_events(conn, events)
    return [s.job.id in accepted or s.job.id in moved_on for s in sends]


async def record_accepted(
    conn: AsyncConnection,
    job: OutboundJob,
    *,
    wamid: str,
    now: datetime,
    attempt: Mapping[str, Any],
) -> bool:
    """:func:`record_accepted_many` of one send."""
    (held,) = await record_accepted_many(conn, [AcceptedSend(job, wamid, now, attempt)])
    return held


async def record_retry(
    conn: AsyncConnection,
    job: OutboundJob,
    *,
    next_attempt_at: datetime,
    now: datetime,
    attempt: Mapping[str, Any],
    count_attempt: bool = True,
) -> bool:
    await _job_event(
        conn,
        job,
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
        await _job_event(
            conn,
            job,
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
            **error_columns(error),
            **values,
        )
    )
    if result.rowcount:
        await _job_event(
            conn,
            job,
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


async def cancel(
    conn: AsyncConnection, message_id: str, *, client_id: str, error: MessageError, now: datetime
) -> bool:
    """Fail a message of this client that is still queued and not being sent right now (no live
    lease); False otherwise (the caller tells which)."""
    result = await conn.execute(
        update(messages)
        .where(
            messages.c.id == message_id,
            messages.c.client_id == client_id,
            messages.c.status == str(MessageStatus.QUEUED),
            or_(messages.c.lease_expires_at.is_(None), messages.c.lease_expires_at <= now),
        )
        .values(
            status=str(MessageStatus.FAILED),
            **error_columns(error),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(messages.c.correlation_id)
    )
    correlation_id = result.scalar()
    if correlation_id is None:
        return False
    await add_event(
        conn,
        message_id=message_id,
        correlation_id=correlation_id,
        at=now,
        kind=EventKind.STATUS,
        status=MessageStatus.FAILED,
        applied=True,
        detail={"source": "router", "code": error.code},
    )
    return True
