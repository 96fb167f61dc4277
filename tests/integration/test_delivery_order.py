"""Per-conversation order, pair pacing and sender leases, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from adapters.db import contacts as contact_repo
from adapters.db import keys as key_repo
from adapters.db import leases as lease_repo
from adapters.db import outbox
from adapters.db.engine import Database, sqlite_of
from domain.model import ErrorSource, MessageError, Sender
from tests.conftest import open_database
from tests.integration.test_repositories import LEASE, SENDER, T0, add_message, at, claim, ids

PAIR = "14155550001"


async def test_one_conversation_goes_out_one_message_at_a_time_in_order(any_db: Database) -> None:
    async with any_db.write() as conn:
        for n in (1, 2, 3):
            await add_message(conn, f"msg_00{n}", now=at(n), wa_id=PAIR)
        await add_message(conn, "msg_009", now=at(9))  # another customer

    first = await claim(any_db, "w", at(10))
    assert ids(first) == ["msg_001", "msg_009"]
    assert await claim(any_db, "w", at(11)) == []  # msg_002 waits for msg_001's wamid

    async with any_db.write() as conn:
        for job in first:
            await outbox.record_accepted(
                conn, job, wamid="wamid." + job.id, now=at(12), attempt={"outcome": "accepted"}
            )
    second = await claim(any_db, "w", at(13))
    assert ids(second) == ["msg_002"]

    async with any_db.write() as conn:  # msg_002 backs off: msg_003 still waits behind it
        await outbox.record_retry(
            conn, second[0], next_attempt_at=at(60), now=at(14), attempt={"outcome": "retry"}
        )
    assert await claim(any_db, "w", at(15)) == []
    third_try = await claim(any_db, "w", at(60))
    assert ids(third_try) == ["msg_002"]

    async with any_db.write() as conn:  # a final failure lets the conversation go on
        await outbox.record_failed(
            conn,
            third_try[0],
            now=at(61),
            attempt={"outcome": "failed"},
            error=MessageError(code=131026, title="x", detail=None, source=ErrorSource.CLOUD_API),
        )
    assert ids(await claim(any_db, "w", at(62))) == ["msg_003"]


async def test_the_pairs_pace_holds_its_next_message(any_db: Database) -> None:
    async with any_db.write() as conn:
        await key_repo.upsert_sender(conn, Sender(phone_number_id=SENDER), now=T0)
        await add_message(conn, "msg_001", wa_id=PAIR)
        await contact_repo.set_pair_pace(conn, SENDER, PAIR, next_send_at=at(30), strikes=1)

    assert await claim(any_db, "w", at(29)) == []
    async with any_db.read() as conn:
        assert await outbox.due_senders(conn, now=at(29)) == []
        assert await outbox.due_senders(conn, now=at(30)) == [SENDER]
    assert ids(await claim(any_db, "w", at(30))) == ["msg_001"]
    async with any_db.read() as conn:
        assert await contact_repo.pair_pace(conn, SENDER, PAIR) == (at(30), 1)


async def test_a_claim_can_be_limited_to_one_sender(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001", sender_id=SENDER)
        await add_message(conn, "msg_002", sender_id="106540352242923")
    async with any_db.write() as conn:
        jobs = await outbox.claim_due(
            conn,
            owner="w",
            now=at(5),
            lease=timedelta(seconds=30),
            limit=10,
            skip_locked=not any_db.is_sqlite,
            sender_id="106540352242923",
        )
    assert ids(jobs) == ["msg_002"]


async def test_a_sender_is_leased_to_one_dispatcher_at_a_time(any_db: Database) -> None:
    async with any_db.write() as conn:
        await key_repo.upsert_sender(conn, Sender(phone_number_id=SENDER, max_mps=250), now=T0)
    ttl = timedelta(seconds=30)

    async def take(owner: str, now: datetime) -> dict[str, int]:
        async with any_db.write() as conn:
            return await lease_repo.acquire(
                conn, [SENDER], owner=owner, now=now, expires_at=now + ttl
            )

    assert await take("a", at(0)) == {SENDER: 250}
    assert await take("b", at(10)) == {}
    assert await take("a", at(20)) == {SENDER: 250}  # renewed until at(50)
    assert await take("b", at(45)) == {}
    assert await take("b", at(50)) == {SENDER: 250}  # a died: b takes over
    async with any_db.write() as conn:
        await lease_repo.release(conn, owner="b")
    assert await take("a", at(51)) == {SENDER: 250}
    async with any_db.read() as conn:
        assert await lease_repo.holders(conn, now=at(52)) == {SENDER: "a"}


async def test_sender_leases_change_one_dispatcher_at_a_time(any_db: Database) -> None:
    """Two renewals at once, each reaching for the other's sender in its own order, would
    deadlock on PostgreSQL (which then fails one of them): the second waits for the first."""
    other = "106540352242923"
    ttl = timedelta(seconds=30)
    async with any_db.write() as conn:
        for sender_id in (SENDER, other):
            await key_repo.upsert_sender(conn, Sender(phone_number_id=sender_id), now=T0)
        await lease_repo.acquire(conn, [SENDER], owner="a", now=at(0), expires_at=at(0) + ttl)
        await lease_repo.acquire(conn, [other], owner="b", now=at(0), expires_at=at(0) + ttl)

    async def renew(owner: str, sender_ids: list[str]) -> dict[str, int]:
        async with any_db.write() as conn:
            await lease_repo.lock(conn)
            return await lease_repo.acquire(
                conn, sender_ids, owner=owner, now=at(10), expires_at=at(10) + ttl
            )

    async with any_db.write() as conn:
        await lease_repo.lock(conn)
        await lease_repo.acquire(conn, [SENDER], owner="a", now=at(10), expires_at=at(10) + ttl)
        second = asyncio.create_task(renew("b", [other, SENDER]))
        await asyncio.sleep(0.3)
        assert not second.done()  # it waits, holding no lease row
        held = await lease_repo.acquire(
            conn, [other], owner="a", now=at(10), expires_at=at(10) + ttl
        )
    assert held == {SENDER: 80}  # the other one is b's until at(30)
    assert await asyncio.wait_for(second, timeout=10) == {other: 80}
    async with any_db.read() as conn:
        assert await lease_repo.holders(conn, now=at(39)) == {SENDER: "a", other: "b"}


async def test_a_sender_given_back_is_free_from_the_given_time_for_everyone(
    any_db: Database,
) -> None:
    """A dispatcher frees a sender a pace window after its last send: until then nobody takes
    it, not even the one that gave it back (with a fresh count of its sends)."""
    ttl = timedelta(seconds=30)

    async def take(owner: str, now: datetime) -> dict[str, int]:
        async with any_db.write() as conn:
            return await lease_repo.acquire(
                conn, [SENDER], owner=owner, now=now, expires_at=now + ttl
            )

    async with any_db.write() as conn:
        await key_repo.upsert_sender(conn, Sender(phone_number_id=SENDER), now=T0)
    assert await take("a", at(0)) == {SENDER: 80}
    async with any_db.write() as conn:
        await lease_repo.release(conn, owner="a", sender_ids=[SENDER], free_from=at(11))
    assert await take("a", at(10)) == {}
    assert await take("b", at(10)) == {}
    async with any_db.read() as conn:
        assert await lease_repo.holders(conn, now=at(10)) == {}  # given back: nobody's
    assert await take("b", at(11)) == {SENDER: 80}


async def test_resuming_a_paused_sender(any_db: Database) -> None:
    async with any_db.write() as conn:
        await key_repo.upsert_sender(conn, Sender(phone_number_id=SENDER), now=T0)
        await key_repo.pause_sender(
            conn, SENDER, until=datetime(9999, 12, 31, tzinfo=UTC), reason="190: token"
        )
        assert await key_repo.resume_sender(conn, SENDER)
        assert not await key_repo.resume_sender(conn, "404")
        sender = await key_repo.get_sender(conn, SENDER)
    assert sender is not None
    assert (sender.paused_until, sender.pause_reason) == (None, None)


async def test_the_dispatchers_queries_read_a_senders_queue_in_index_order(
    tmp_path: Path,
) -> None:
    """On SQLite the claim and the due-senders check walk ix_messages_queue and stop at the
    rows they take: neither sorts the queue nor reads it whole (with 9,400 queued, each took
    35-45 ms and the dispatcher spent half its time in them)."""
    db, _ = await open_database("sqlite", tmp_path)
    executed: list[str] = []
    try:
        async with db.write() as conn:
            await key_repo.upsert_sender(conn, Sender(phone_number_id=SENDER), now=T0)
            for n in range(20):
                await add_message(conn, f"msg_{n:03}", now=at(n))
        async with db.read() as conn:
            raw = sqlite_of(conn)
            assert raw is not None
            raw.set_trace_callback(executed.append)
            assert await outbox.due_senders(conn, now=at(30)) == [SENDER]
        async with db.write() as conn:
            raw = sqlite_of(conn)
            assert raw is not None
            raw.set_trace_callback(executed.append)
            jobs = await outbox.claim_due(
                conn,
                owner="w",
                now=at(30),
                lease=LEASE,
                limit=5,
                skip_locked=False,
                sender_id=SENDER,
            )
            raw.set_trace_callback(None)
        assert ids(jobs) == [f"msg_{n:03}" for n in range(5)]
        plans = []
        with sqlite3.connect(tmp_path / "router.db") as other:
            for sql in executed:
                if "FROM messages AS m" in sql:
                    plans.append(
                        " / ".join(r[3] for r in other.execute("EXPLAIN QUERY PLAN " + sql))
                    )
    finally:
        await db.dispose()
    assert len(plans) == 2
    for plan in plans:
        assert "SEARCH m USING INDEX ix_messages_queue (status=? AND sender_id=?)" in plan
        assert "TEMP B-TREE" not in plan


def sql_literal(value: object) -> str:
    """A parameter of the tests' own statements, as an SQL literal (for EXPLAIN EXECUTE)."""
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    assert isinstance(value, int)
    return str(value)


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


@pytest.mark.postgres
async def test_on_postgresql_the_dispatchers_queries_read_the_queue_through_its_indexes(
    postgres_db: Database, asyncpg_statements: list[tuple[str, tuple[Any, ...]]]
) -> None:
    """With 50,000 messages already read and 2,000 queued for 20 senders (statistics taken),
    PostgreSQL plans the due-senders check and the claim through ix_messages_queue, the pair
    and primary-key indexes: no sequential scan of messages, no sort of a queue. The generic
    plans are checked, the ones a prepared statement ends up with: with the status bound as a
    parameter, they scanned a sender's whole queue and sorted it on every claim."""
    db = postgres_db
    senders = [str(106540352240000 + n) for n in range(20)]

    async with db.write() as conn:
        for sender in senders:
            await key_repo.upsert_sender(conn, Sender(phone_number_id=sender), now=T0)
        for status, count, first in (("read", 50_000, 0), ("queued", 2_000, 50_000)):
            await conn.execute(
                text(
                    "INSERT INTO messages (id, client_id, sender_id, wa_id, kind, payload,"
                    " status, attempts, next_attempt_at, correlation_id, created_at,"
                    " updated_at) SELECT 'msg_' || lpad((s.n + :first)::text, 26, '0'),"
                    " 'cli_a', (106540352240000 + s.n % 20)::text,"
                    " (4915100000000 + s.n % 5000)::text, 'text', '{}'::json, :status, 0,"
                    " :at, 'req_' || s.n, :at, :at FROM generate_series(1, :count) AS s(n)"
                ),
                {"first": first, "status": status, "count": count, "at": T0},
            )
        await conn.execute(text("ANALYZE messages"))
    asyncpg_statements.clear()
    async with db.read() as conn:
        assert await outbox.due_senders(conn, now=at(30)) == senders
    async with db.write() as conn:
        jobs = await outbox.claim_due(
            conn,
            owner="w",
            now=at(30),
            lease=LEASE,
            limit=50,
            skip_locked=True,
            sender_id=senders[3],
        )
    executed = [(q, args) for q, args in asyncpg_statements if "FROM messages AS m" in q]
    # Sender 3's oldest queued messages: n = 3, 23, 43... of the queued series.
    assert ids(jobs) == [f"msg_{50_000 + n:026}" for n in range(3, 1003, 20)]
    plans = []
    async with db.read() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        # As prepared statements run after a few executions: a generic plan, which sees
        # the parameters ($1...) but not their values.
        await driver.execute("SET plan_cache_mode = force_generic_plan")
        for n, (statement, params) in enumerate(list(executed)):
            await driver.execute(f"PREPARE dispatcher_{n} AS {statement}")
            values = ", ".join(sql_literal(v) for v in params)
            document = await driver.fetchval(
                f"EXPLAIN (FORMAT JSON) EXECUTE dispatcher_{n}({values})"
            )
            plan = document if isinstance(document, list) else json.loads(document)
            plans.append(list(plan_nodes(plan[0]["Plan"])))
        await driver.execute("RESET plan_cache_mode")
    assert len(plans) == 2, (
        "the dispatcher's statements did not run as prepared statements on asyncpg"
    )
    for nodes in plans:
        scans = {
            (n["Node Type"], n.get("Index Name"))
            for n in nodes
            if n.get("Relation Name") == "messages"
        }
        assert ("Index Scan", "ix_messages_queue") in scans
        assert not any(kind == "Seq Scan" for kind, _ in scans)
        assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes)
