"""Sender leases: each sender is dispatched by one dispatcher at a time, so its pace (Meta
counts messages per second per number) lives in one process's memory. Dispatchers register
themselves, so each can take a fair share of the senders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.tables import dispatchers, senders
from adapters.db.tables import sender_leases as leases

#: The PostgreSQL advisory lock (any constant of ours) under which sender leases change.
LEASES_LOCK = 7400312
#: The owner of a sender lease that was given back: nobody, until it expires.
GIVEN_BACK = ""


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


async def lock(conn: AsyncConnection) -> None:
    """PostgreSQL: change sender leases one dispatcher at a time, until this transaction ends.
    A renewal gives back, renews and takes several rows, in an order of its own: two at once
    could each wait for a row the other one holds, a deadlock that PostgreSQL breaks by failing
    one of them. (SQLite has one writer at a time anyway.)"""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(LEASES_LOCK)))


async def heartbeat(
    conn: AsyncConnection, *, owner: str, now: datetime, live_since: datetime
) -> int:
    """Register this dispatcher as alive; returns how many dispatchers are (this one too)."""
    stmt = _insert(conn, dispatchers).values(owner=owner, seen_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[dispatchers.c.owner], set_={"seen_at": now})
    )
    await conn.execute(delete(dispatchers).where(dispatchers.c.seen_at < live_since))
    return int(await conn.scalar(select(func.count()).select_from(dispatchers)) or 1)


async def leased_elsewhere(conn: AsyncConnection, *, owner: str, now: datetime) -> set[str]:
    """The senders other dispatchers hold right now."""
    rows = await conn.execute(
        select(leases.c.sender_id).where(leases.c.owner != owner, leases.c.expires_at > now)
    )
    return {row.sender_id for row in rows}


async def acquire(
    conn: AsyncConnection,
    sender_ids: Sequence[str],
    *,
    owner: str,
    now: datetime,
    expires_at: datetime,
    limit: int | None = None,
) -> dict[str, int]:
    """Take or renew, in the given order, the leases of ``sender_ids`` that are free, expired
    or already ours, up to ``limit``. Returns the senders this owner now holds, with their
    ``max_mps``."""
    held = 0
    for sender_id in sender_ids:
        if limit is not None and held >= limit:
            break
        stmt = _insert(conn, leases).values(sender_id=sender_id, owner=owner, expires_at=expires_at)
        taken = await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[leases.c.sender_id],
                set_={"owner": owner, "expires_at": expires_at},
                where=or_(leases.c.expires_at <= now, leases.c.owner == owner),
            ).returning(leases.c.sender_id)
        )
        held += taken.first() is not None
    rows = await conn.execute(
        select(leases.c.sender_id, senders.c.max_mps)
        .join(senders, senders.c.phone_number_id == leases.c.sender_id)
        .where(leases.c.owner == owner, leases.c.expires_at > now)
    )
    return {row.sender_id: row.max_mps for row in rows}


async def release(
    conn: AsyncConnection,
    *,
    owner: str,
    sender_ids: Sequence[str] | None = None,
    free_from: datetime | None = None,
) -> None:
    """Give back some (or all) of this owner's senders; all also forgets the dispatcher. With
    ``free_from``, nobody (this owner neither) takes them before then: a dispatcher frees a
    sender a pace window after its last send, so that the next holder, which does not know
    those sends, cannot exceed the sender's pace with them."""
    mine = [leases.c.owner == owner]
    if sender_ids is not None:
        mine.append(leases.c.sender_id.in_(sender_ids))
    else:
        await conn.execute(delete(dispatchers).where(dispatchers.c.owner == owner))
    if free_from is None:
        await conn.execute(delete(leases).where(*mine))
    else:
        await conn.execute(
            update(leases).where(*mine).values(owner=GIVEN_BACK, expires_at=free_from)
        )


async def holders(conn: AsyncConnection, *, now: datetime) -> dict[str, str]:
    """sender_id → owner of every live lease (for operators)."""
    rows = await conn.execute(
        select(leases.c.sender_id, leases.c.owner).where(
            leases.c.expires_at > now, leases.c.owner != GIVEN_BACK
        )
    )
    return {row.sender_id: row.owner for row in rows}
