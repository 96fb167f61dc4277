"""GCRA state in the database, so every replica spends from the same budget."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.tables import rate_limits
from domain.ratelimit import Quota, Verdict, gcra


async def _stored(
    conn: AsyncConnection, subject: str, names: Sequence[str], *, lock: bool
) -> dict[str, int]:
    query = select(rate_limits.c.bucket, rate_limits.c.tat_ns).where(
        rate_limits.c.subject == subject, rate_limits.c.bucket.in_(names)
    )
    if lock:
        query = query.with_for_update()
    return {row.bucket: row.tat_ns for row in await conn.execute(query)}


async def spend(
    conn: AsyncConnection, subject: str, quotas: Sequence[Quota], *, now_ns: int
) -> list[Verdict]:
    """Decide one request against every quota; the budgets are spent only if all allow it."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(
        dialect.insert(rate_limits)
        .values([{"subject": subject, "bucket": q.name, "tat_ns": 0} for q in quotas])
        .on_conflict_do_nothing(index_elements=[rate_limits.c.subject, rate_limits.c.bucket])
    )
    stored = await _stored(conn, subject, [q.name for q in quotas], lock=True)
    verdicts = [gcra(stored.get(q.name), now_ns, q) for q in quotas]
    if all(v.allowed for v in verdicts):
        for verdict in verdicts:
            await conn.execute(
                update(rate_limits)
                .where(rate_limits.c.subject == subject, rate_limits.c.bucket == verdict.quota.name)
                .values(tat_ns=verdict.tat_ns)
            )
    return verdicts


async def look(conn: AsyncConnection, subject: str, quota: Quota, *, now_ns: int) -> Verdict:
    """What one more request would meet, without spending anything."""
    stored = await _stored(conn, subject, [quota.name], lock=False)
    return gcra(stored.get(quota.name), now_ns, quota)


async def sweep(conn: AsyncConnection, *, now_ns: int) -> int:
    """Delete budgets that are whole again: a past arrival time is the same as no row."""
    result = await conn.execute(delete(rate_limits).where(rate_limits.c.tat_ns < now_ns))
    return int(result.rowcount or 0)
