"""Sender leases: each sender is dispatched by one dispatcher at a time, so its pace (Meta
counts messages per second per number) lives in one process's memory."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.tables import sender_leases as leases
from adapters.db.tables import senders


async def acquire(
    conn: AsyncConnection,
    sender_ids: Sequence[str],
    *,
    owner: str,
    now: datetime,
    expires_at: datetime,
) -> dict[str, int]:
    """Take or renew the leases of ``sender_ids`` that are free, expired or already ours.
    Returns the senders this owner now holds, with their ``max_mps``."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for sender_id in sender_ids:
        stmt = dialect.insert(leases).values(
            sender_id=sender_id, owner=owner, expires_at=expires_at
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[leases.c.sender_id],
                set_={"owner": owner, "expires_at": expires_at},
                where=or_(leases.c.expires_at <= now, leases.c.owner == owner),
            )
        )
    rows = await conn.execute(
        select(leases.c.sender_id, senders.c.max_mps)
        .join(senders, senders.c.phone_number_id == leases.c.sender_id)
        .where(leases.c.owner == owner, leases.c.expires_at > now)
    )
    return {row.sender_id: row.max_mps for row in rows}


async def release(conn: AsyncConnection, *, owner: str) -> None:
    await conn.execute(delete(leases).where(leases.c.owner == owner))


async def holders(conn: AsyncConnection, *, now: datetime) -> dict[str, str]:
    """sender_id → owner of every live lease (for operators)."""
    rows = await conn.execute(
        select(leases.c.sender_id, leases.c.owner).where(leases.c.expires_at > now)
    )
    return {row.sender_id: row.owner for row in rows}
