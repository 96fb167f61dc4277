"""GCRA state in the database holds across replicas: concurrent spends never overshoot."""

from __future__ import annotations

import asyncio

from adapters.db import ratelimits
from adapters.db.engine import Database
from domain.ratelimit import NS, Quota, per_hour, per_minute

NOW = 1_700_000_000 * NS


async def _spend(db: Database, quotas: tuple[Quota, ...], now: int) -> bool:
    async with db.write() as conn:
        verdicts = await ratelimits.spend(conn, "cli_a", quotas, now_ns=now)
    return all(v.allowed for v in verdicts)


async def test_two_replicas_spending_at_once_admit_exactly_the_budget(any_db: Database) -> None:
    """The replica runs on a thread with its own event loop, as another process would: on
    SQLite it waits for this one's write lock without stopping this loop's commits."""
    quotas = (per_minute("send", 5),)

    async def replica_spends() -> list[bool]:
        replica = Database(any_db.url, schema=any_db.schema)
        try:
            return list(await asyncio.gather(*(_spend(replica, quotas, NOW) for _ in range(10))))
        finally:
            await replica.dispose()

    elsewhere = asyncio.to_thread(asyncio.run, replica_spends())
    here = asyncio.gather(*(_spend(any_db, quotas, NOW) for _ in range(10)))
    theirs, ours = await asyncio.gather(elsewhere, here)

    assert sum(theirs) + sum(ours) == 5


async def test_nothing_is_spent_unless_every_quota_allows(any_db: Database) -> None:
    quotas = (per_minute("send", 10), per_hour("send_hour", 2))
    assert [await _spend(any_db, quotas, NOW) for _ in range(3)] == [True, True, False]

    async with any_db.read() as conn:
        minute = await ratelimits.look(conn, "cli_a", quotas[0], now_ns=NOW)
    assert minute.remaining == 7  # the refused request did not spend a minute's token


async def test_budgets_are_per_subject(any_db: Database) -> None:
    quota = per_minute("send", 1)
    async with any_db.write() as conn:
        first = await ratelimits.spend(conn, "cli_a", (quota,), now_ns=NOW)
        other = await ratelimits.spend(conn, "cli_b", (quota,), now_ns=NOW)
        again = await ratelimits.spend(conn, "cli_a", (quota,), now_ns=NOW)
    assert (first[0].allowed, other[0].allowed, again[0].allowed) == (True, True, False)


async def test_budgets_that_are_whole_again_are_swept(any_db: Database) -> None:
    quota = per_minute("send", 60)
    async with any_db.write() as conn:
        await ratelimits.spend(conn, "cli_a", (quota,), now_ns=NOW)
        await ratelimits.spend(conn, "cli_b", (quota,), now_ns=NOW + 30 * NS)
        swept = await ratelimits.sweep(conn, now_ns=NOW + 2 * NS)  # cli_a's tat was NOW + 1 s
    async with any_db.read() as conn:
        a = await ratelimits.look(conn, "cli_a", quota, now_ns=NOW + 2 * NS)
        b = await ratelimits.look(conn, "cli_b", quota, now_ns=NOW + 30 * NS)
    assert swept == 1
    assert a.remaining == 59  # a fresh budget: the row is gone
    assert b.remaining == 58  # still spent
