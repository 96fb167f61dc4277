"""GCRA state in the database holds across replicas: concurrent spends never overshoot."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import ratelimits
from adapters.db.engine import Database
from app.services.ratelimit import DatabaseStore
from domain.ratelimit import NS, Quota, Verdict, per_hour, per_minute

NOW = 1_700_000_000 * NS


async def spend(
    conn: AsyncConnection, subject: str, quotas: tuple[Quota, ...], *, now_ns: int
) -> list[Verdict]:
    """One request decided alone."""
    [verdicts] = await ratelimits.decide(
        conn, [ratelimits.Ask(subject, quotas, now_ns, spend=True)]
    )
    return verdicts


async def look(conn: AsyncConnection, subject: str, quota: Quota, *, now_ns: int) -> Verdict:
    """What one more request would meet, spending nothing."""
    [[verdict]] = await ratelimits.decide(
        conn, [ratelimits.Ask(subject, (quota,), now_ns, spend=False)]
    )
    return verdict


async def _spend(db: Database, quotas: tuple[Quota, ...], now: int) -> bool:
    async with db.write() as conn:
        verdicts = await spend(conn, "cli_a", quotas, now_ns=now)
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
        minute = await look(conn, "cli_a", quotas[0], now_ns=NOW)
    assert minute.remaining == 7  # the refused request did not spend a minute's token


async def test_budgets_are_per_subject(any_db: Database) -> None:
    quota = per_minute("send", 1)
    async with any_db.write() as conn:
        first = await spend(conn, "cli_a", (quota,), now_ns=NOW)
        other = await spend(conn, "cli_b", (quota,), now_ns=NOW)
        again = await spend(conn, "cli_a", (quota,), now_ns=NOW)
    assert (first[0].allowed, other[0].allowed, again[0].allowed) == (True, True, False)


async def test_budgets_that_are_whole_again_are_swept(any_db: Database) -> None:
    quota = per_minute("send", 60)
    async with any_db.write() as conn:
        await spend(conn, "cli_a", (quota,), now_ns=NOW)
        await spend(conn, "cli_b", (quota,), now_ns=NOW + 30 * NS)
        swept = await ratelimits.sweep(conn, now_ns=NOW + 2 * NS)  # cli_a's tat was NOW + 1 s
    async with any_db.read() as conn:
        a = await look(conn, "cli_a", quota, now_ns=NOW + 2 * NS)
        b = await look(conn, "cli_b", quota, now_ns=NOW + 30 * NS)
    assert swept == 1
    assert a.remaining == 59  # a fresh budget: the row is gone
    assert b.remaining == 58  # still spent


class _CountingWrites:
    """The database, counting the write transactions that reach it."""

    def __init__(self, db: Database) -> None:
        self.db, self.writes = db, 0

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        self.writes += 1
        return self.db.write()

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.db.read()


async def test_a_process_decides_its_concurrent_requests_in_one_round(any_db: Database) -> None:
    """Thirty concurrent requests of one client: one transaction decides them, in arrival
    order, against the exact budget (a transaction each would queue behind one another's
    lock on the client's budget)."""
    counting = _CountingWrites(any_db)
    store = DatabaseStore(counting)  # type: ignore[arg-type]
    quotas = (per_minute("send", 10),)

    verdicts = await asyncio.gather(*(store.spend("cli_a", quotas, now_ns=NOW) for _ in range(30)))

    assert [v.allowed for [v] in verdicts] == [True] * 10 + [False] * 20
    assert [v.remaining for [v] in verdicts[:10]] == list(range(9, -1, -1))
    assert counting.writes == 1


async def test_a_look_after_a_spend_in_the_same_round_sees_it(any_db: Database) -> None:
    store = DatabaseStore(any_db)
    quota = per_minute("auth_failures", 1)

    spent, looked = await asyncio.gather(
        store.spend("ip:10.0.0.1", (quota,), now_ns=NOW),
        store.look("ip:10.0.0.1", quota, now_ns=NOW),
    )

    assert spent[0].allowed
    assert not looked.allowed  # the budget of one is spent


async def test_a_failed_round_fails_its_requests_and_the_next_round_decides(
    any_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DatabaseStore(any_db)
    quotas = (per_minute("send", 5),)
    decide = ratelimits.decide
    failures = iter([OperationalError("SELECT", {}, OSError("connection reset"))])

    async def failing_once(conn: AsyncConnection, asks: list[ratelimits.Ask]) -> object:
        if (failure := next(failures, None)) is not None:
            raise failure
        return await decide(conn, asks)

    monkeypatch.setattr(ratelimits, "decide", failing_once)
    first = await asyncio.gather(
        *(store.spend("cli_a", quotas, now_ns=NOW) for _ in range(3)), return_exceptions=True
    )
    second = await store.spend("cli_a", quotas, now_ns=NOW)

    assert [type(r) for r in first] == [OperationalError] * 3
    assert second[0].remaining == 4  # the failed round spent nothing


async def test_replicas_deciding_rounds_over_the_same_budgets_do_not_deadlock(
    any_db: Database,
) -> None:
    """Each replica's rounds lock two clients' budgets, arriving in opposite orders; the
    budgets come out exact (a deadlock would fail a round with an error instead)."""
    quotas = (per_minute("send", 20), per_hour("send_hour", 1000))
    clients = ["cli_a", "cli_b"]

    async def spends(db: Database, order: list[str]) -> list[bool]:
        store = DatabaseStore(db)
        decided = []
        for _ in range(8):  # eight rounds of six requests
            rounds = await asyncio.gather(*(store.spend(c, quotas, now_ns=NOW) for c in order * 3))
            decided += [all(v.allowed for v in verdicts) for verdicts in rounds]
        return decided

    async def replica() -> list[bool]:
        db = Database(any_db.url, schema=any_db.schema)
        try:
            return await spends(db, clients[::-1])
        finally:
            await db.dispose()

    theirs, ours = await asyncio.gather(
        asyncio.to_thread(asyncio.run, replica()), spends(any_db, clients)
    )

    assert sum(theirs) + sum(ours) == 40  # 20 for each client, of 96 requests
