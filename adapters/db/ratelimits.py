"""GCRA state in the database, so every replica spends from the same budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.tables import rate_limits
from domain.ratelimit import Quota, Verdict, gcra


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's question: what do these quotas say now, and (``spend``) spend them."""

    subject: str
    quotas: tuple[Quota, ...]
    now_ns: int
    spend: bool


_KEYS = tuple_(rate_limits.c.subject, rate_limits.c.bucket)
_READ = (
    select(rate_limits.c.subject, rate_limits.c.bucket, rate_limits.c.tat_ns)
    .where(_KEYS.in_(bindparam("keys", expanding=True)))
    .order_by(rate_limits.c.subject, rate_limits.c.bucket)
)
_LOCK = _READ.with_for_update()
_CREATE = {
    name: dialect.insert(rate_limits)
    .values(subject=bindparam("subject"), bucket=bindparam("bucket"), tat_ns=0)
    .on_conflict_do_nothing(index_elements=[rate_limits.c.subject, rate_limits.c.bucket])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_STORE = (
    update(rate_limits)
    .where(
        rate_limits.c.subject == bindparam("key_subject"),
        rate_limits.c.bucket == bindparam("key_bucket"),
    )
    .values(tat_ns=bindparam("tat_ns"))
)


async def decide(conn: AsyncConnection, asks: Sequence[Ask]) -> list[list[Verdict]]:
    """Decide requests in order, each seeing the spends of those before it, as if they had
    come one at a time; a request spends only if every one of its quotas allows it.

    The budgets a spend touches are created if new, then locked in one order (subject,
    bucket), so another process's decisions wait for this transaction's commit instead of
    deadlocking with it. On PostgreSQL the commit does not wait for the WAL flush: a budget
    is advisory state, and a database crash forgetting its last fraction of a second of
    spends lets a client a few requests more, while the locks are held for a round trip
    less."""
    spent = sorted({(a.subject, q.name) for a in asks if a.spend for q in a.quotas})
    keys = sorted({(a.subject, q.name) for a in asks for q in a.quotas})
    if spent:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql("SET LOCAL synchronous_commit TO off")
        await conn.execute(
            _CREATE[conn.dialect.name], [{"subject": s, "bucket": b} for s, b in spent]
        )
    rows = await conn.execute(_LOCK if spent else _READ, {"keys": keys})
    tats: dict[tuple[str, str], int] = {(r.subject, r.bucket): r.tat_ns for r in rows}
    changed: set[tuple[str, str]] = set()
    decided = []
    for ask in asks:
        verdicts = [gcra(tats.get((ask.subject, q.name)), ask.now_ns, q) for q in ask.quotas]
        if ask.spend and all(v.allowed for v in verdicts):
            for verdict in verdicts:
                key = (ask.subject, verdict.quota.name)
                tats[key] = verdict.tat_ns
                changed.add(key)
        decided.append(verdicts)
    if changed:
        await conn.execute(
            _STORE,
            [
                {"key_subject": s, "key_bucket": b, "tat_ns": tats[(s, b)]}
                for s, b in sorted(changed)
            ],
        )
    return decided


async def sweep(conn: AsyncConnection, *, now_ns: int) -> int:
    """Delete budgets that are whole again: a past arrival time is the same as no row."""
    result = await conn.execute(delete(rate_limits).where(rate_limits.c.tat_ns < now_ns))
    return int(result.rowcount or 0)
