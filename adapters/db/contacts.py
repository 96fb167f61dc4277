"""Contacts (the service window of each sender/contact pair), inbound messages and statuses
parked until their wamid is known."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, bindparam, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.prepared import Prepared
from adapters.db.tables import contacts
from adapters.db.tables import inbound_messages as inbound
from adapters.db.tables import orphan_statuses as orphans
from domain.window import WindowState


def _insert(conn: AsyncConnection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


_WINDOW = Prepared(
    select(contacts.c.last_inbound_at, contacts.c.window_closed_at).where(
        contacts.c.sender_id == bindparam("sender_id"), contacts.c.wa_id == bindparam("wa_id")
    )
)  # every accept runs it (see adapters/db/prepared.py)


async def window_state(conn: AsyncConnection, sender_id: str, wa_id: str) -> WindowState:
    row = await _WINDOW.first(conn, {"sender_id": sender_id, "wa_id": wa_id})
    if row is None:
        return WindowState(last_inbound_at=None)
    last_inbound_at, closed_at = row
    return WindowState(last_inbound_at=last_inbound_at, closed_at=closed_at)


async def _of_pairs(
    conn: AsyncConnection, pairs: Sequence[tuple[str, str]], *columns: Any
) -> dict[tuple[str, str], Row[Any]]:
    """``columns`` of the contacts rows of several (sender, contact) pairs, in one query:
    pair → row, for the pairs that have one."""
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = await conn.execute(
        select(contacts.c.sender_id, contacts.c.wa_id, *columns).where(
            contacts.c.sender_id.in_({s for s, _ in wanted}),
            contacts.c.wa_id.in_({w for _, w in wanted}),
        )
    )
    return {pair: row for row in rows if (pair := (row.sender_id, row.wa_id)) in wanted}


async def window_states(
    conn: AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], WindowState]:
    """:func:`window_state` of several (sender, contact) pairs in one query."""
    found = await _of_pairs(conn, pairs, contacts.c.last_inbound_at, contacts.c.window_closed_at)
    states = {}
    for pair in set(pairs):
        row = found.get(pair)
        states[pair] = (
            WindowState(last_inbound_at=None)
            if row is None
            else WindowState(last_inbound_at=row.last_inbound_at, closed_at=row.window_closed_at)
        )
    return states


async def move_last_inbound(
    conn: AsyncConnection, sender_id: str, wa_id: str, at: datetime
) -> None:
    """``last_inbound_at`` = the later of what we had and ``at``; never moves back."""
    stmt = _insert(conn, contacts).values(sender_id=sender_id, wa_id=wa_id, last_inbound_at=at)
    current = contacts.c.last_inbound_at
    stmt = stmt.on_conflict_do_update(
        index_elements=[contacts.c.sender_id, contacts.c.wa_id],
        set_={
            "last_inbound_at": case(
                (current.is_(None), stmt.excluded.last_inbound_at),
                (stmt.excluded.last_inbound_at > current, stmt.excluded.last_inbound_at),
                else_=current,
            )
        },
    )
    await conn.execute(stmt)
    # A customer message in or after the second of Meta's refusal reopens the window (Meta's
    # timestamps are whole seconds, our record of the refusal is not).
    await conn.execute(
        update(contacts)
        .where(
            contacts.c.sender_id == sender_id,
            contacts.c.wa_id == wa_id,
            contacts.c.window_closed_at < at + timedelta(seconds=1),
        )
        .values(window_closed_at=None)
    )


async def mark_window_closed(
    conn: AsyncConnection, sender_id: str, wa_id: str, at: datetime
) -> None:
    """Meta refused a free-form message (131047): its view of the window wins until the customer
    writes again. ``at`` is when Meta refused; a refusal older than the customer's last message
    (a late or redelivered webhook) changes nothing, and the later of two refusals is kept."""
    stmt = _insert(conn, contacts).values(sender_id=sender_id, wa_id=wa_id, window_closed_at=at)
    refused_at = stmt.excluded.window_closed_at
    current = contacts.c.window_closed_at
    stmt = stmt.on_conflict_do_update(
        index_elements=[contacts.c.sender_id, contacts.c.wa_id],
        set_={
            "window_closed_at": case(
                (
                    and_(
                        or_(
                            contacts.c.last_inbound_at.is_(None),
                            contacts.c.last_inbound_at <= refused_at,
                        ),
                        or_(current.is_(None), current < refused_at),
                    ),
                    refused_at,
                ),
                else_=current,
            )
        },
    )
    await conn.execute(stmt)


async def record_inbound(
    conn: AsyncConnection,
    *,
    wamid: str,
    sender_id: str,
    wa_id: str | None,
    user_id: str | None,
    type_: str,
    sent_at: datetime,
    now: datetime,
) -> bool:
    """Store an inbound message once; False for a redelivery."""
    stmt = (
        _insert(conn, inbound)
        .values(
            wamid=wamid,
            sender_id=sender_id,
            wa_id=wa_id,
            user_id=user_id,
            type=type_,
            sent_at=sent_at,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=[inbound.c.wamid])
    )
    result = await conn.execute(stmt)
    return bool(result.rowcount)


async def park_status(
    conn: AsyncConnection,
    *,
    wamid: str,
    status: str,
    at: datetime,
    error: Mapping[str, Any] | None,
    now: datetime,
) -> None:
    stmt = (
        _insert(conn, orphans)
        .values(
            wamid=wamid,
            status=status,
            at=at,
            error=None if error is None else dict(error),
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=[orphans.c.wamid, orphans.c.status])
    )
    await conn.execute(stmt)


_TAKE_PARKED = (
    delete(orphans)
    .where(orphans.c.wamid == bindparam("b_wamid"))
    .returning(orphans.c.id, orphans.c.status, orphans.c.at, orphans.c.error)
)  # built once: every accepted send runs it


async def take_parked(conn: AsyncConnection, wamid: str) -> list[tuple[str, datetime, Any]]:
    """Remove and return the statuses parked for ``wamid``, oldest first."""
    rows = (await conn.execute(_TAKE_PARKED, {"b_wamid": wamid})).all()
    return [(r.status, r.at, r.error) for r in sorted(rows, key=lambda r: r.id)]


async def sweep_parked(conn: AsyncConnection, *, received_before: datetime) -> int:
    """Statuses parked for too long belong to messages other apps sent from the same number."""
    result = await conn.execute(delete(orphans).where(orphans.c.received_at < received_before))
    return int(result.rowcount or 0)


async def last_inbound_seen(conn: AsyncConnection, sender_id: str, wa_id: str) -> datetime | None:
    """The newest inbound message recorded for the pair (the sandbox simulator's own view)."""
    latest: datetime | None = await conn.scalar(
        select(func.max(inbound.c.sent_at)).where(
            inbound.c.sender_id == sender_id, inbound.c.wa_id == wa_id
        )
    )
    return latest


def _set_pair_pace(dialect: Any) -> Any:
    stmt = dialect.insert(contacts).values(
        sender_id=bindparam("b_sender"),
        wa_id=bindparam("b_wa_id"),
        next_send_at=bindparam("b_next", type_=contacts.c.next_send_at.type),
        pair_strikes=bindparam("b_strikes"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[contacts.c.sender_id, contacts.c.wa_id],
        set_={
            "next_send_at": stmt.excluded.next_send_at,
            "pair_strikes": stmt.excluded.pair_strikes,
        },
    )


# Built once for each dialect: every accepted send runs them.
_SET_PAIR_PACE = {"postgresql": _set_pair_pace(postgresql), "sqlite": _set_pair_pace(sqlite)}


async def pair_paces(
    conn: AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[datetime | None, int]]:
    """(next_send_at, strikes) of several (sender, contact) pairs in one query: each pair's pace
    and its run of 131056 refusals."""
    found = await _of_pairs(conn, pairs, contacts.c.next_send_at, contacts.c.pair_strikes)
    paces: dict[tuple[str, str], tuple[datetime | None, int]] = {}
    for pair in set(pairs):
        row = found.get(pair)
        paces[pair] = (None, 0) if row is None else (row.next_send_at, row.pair_strikes)
    return paces


async def pair_pace(
    conn: AsyncConnection, sender_id: str, wa_id: str
) -> tuple[datetime | None, int]:
    """:func:`pair_paces` of one pair."""
    return (await pair_paces(conn, [(sender_id, wa_id)]))[(sender_id, wa_id)]


async def set_pair_paces(
    conn: AsyncConnection, paces: Mapping[tuple[str, str], tuple[datetime, int]]
) -> None:
    """:func:`set_pair_pace` of several pairs in one statement."""
    if not paces:
        return
    stmt = _SET_PAIR_PACE["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    await conn.execute(
        stmt,
        [
            {"b_sender": s, "b_wa_id": w, "b_next": next_send_at, "b_strikes": strikes}
            for (s, w), (next_send_at, strikes) in sorted(paces.items())
        ],
    )


async def parked_wamids(conn: AsyncConnection, wamids: Sequence[str]) -> list[str]:
    """Those of ``wamids`` that have statuses parked (usually none)."""
    if not wamids:
        return []
    rows = await conn.execute(
        select(orphans.c.wamid).where(orphans.c.wamid.in_(list(wamids))).distinct()
    )
    return sorted(row.wamid for row in rows)


async def set_pair_pace(
    conn: AsyncConnection, sender_id: str, wa_id: str, *, next_send_at: datetime, strikes: int
) -> None:
    await set_pair_paces(conn, {(sender_id, wa_id): (next_send_at, strikes)})
