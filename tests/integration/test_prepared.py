"""Prepared statements (SQLite straight to sqlite3, PostgreSQL straight to asyncpg) read and
write the same values SQLAlchemy does, and fail with SQLAlchemy's errors."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, event, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.db.engine import Database
from adapters.db.prepared import Prepared
from adapters.db.tables import contacts
from adapters.db.tables import message_events as events

AT = datetime(2026, 11, 22, 9, 30, 15, 123456, tzinfo=UTC)
COLUMNS = ["message_id", "correlation_id", "at", "kind", "status", "applied", "detail"]
INSERT = Prepared(events.insert(), columns=COLUMNS)
BY_MESSAGE = Prepared(
    select(events.c.at, events.c.applied, events.c.detail, events.c.status)
    .where(events.c.message_id == bindparam("m"), events.c.kind == "status")
    .order_by(events.c.id)
)


def event_row(message_id: str, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "message_id": message_id,
        "correlation_id": "req_1",
        "at": AT,
        "kind": "status",
        "status": "sent",
        "applied": True,
        "detail": {"source": "meta", "pricing": {"billable": False}, "note": "ünïcode"},
    }
    return row | changes


async def test_a_prepared_write_reads_back_through_sqlalchemy_unchanged(any_db: Database) -> None:
    written = [event_row("m1"), event_row("m1", applied=False, detail=None, status=None)]
    async with any_db.write() as conn:
        await INSERT.run_many(conn, written)
    async with any_db.read() as conn:
        found = (
            await conn.execute(
                select(*(events.c[c] for c in COLUMNS)).where(events.c.message_id == "m1")
            )
        ).all()
    assert [dict(r._mapping) for r in found] == written
    assert found[0].at.tzinfo is not None  # aware, in UTC, as SQLAlchemy gives it


async def test_sqlalchemys_write_reads_back_through_a_prepared_select_unchanged(
    any_db: Database,
) -> None:
    other_zone = AT.astimezone(timezone(timedelta(hours=5, minutes=30)))
    async with any_db.write() as conn:
        await conn.execute(insert(events), [event_row("m2", at=other_zone)])
        await conn.execute(insert(events), [event_row("m2", kind="attempt")])  # not a status
    async with any_db.read() as conn:
        rows = await BY_MESSAGE.rows(conn, {"m": "m2"})
    assert rows == [(AT, True, event_row("m2")["detail"], "sent")]
    assert BY_MESSAGE.names == ("at", "applied", "detail", "status")


async def test_an_updates_returning_rows_read_like_a_selects(any_db: Database) -> None:
    """What an UPDATE returns goes through the result processors too: aware datetimes and
    decoded JSON, as the dispatcher's claim reads its messages."""
    async with any_db.write() as conn:
        await INSERT.run(conn, event_row("m3"))
    later = AT + timedelta(seconds=5)
    touch = Prepared(
        update(events)
        .where(events.c.message_id == bindparam("m"))
        .values(at=bindparam("b_at", type_=events.c.at.type))
        .returning(events.c.message_id, events.c.at, events.c.detail)
    )
    async with any_db.write() as conn:
        rows = await touch.rows(conn, {"m": "m3", "b_at": later})
    assert rows == [("m3", later, event_row("m3")["detail"])]
    assert rows[0][1].tzinfo is not None
    assert touch.names == ("message_id", "at", "detail")


async def test_a_duplicate_key_is_sqlalchemys_integrity_error(any_db: Database) -> None:
    add = Prepared(contacts.insert(), columns=["sender_id", "wa_id", "pair_strikes"])
    row = {"sender_id": "s1", "wa_id": "4915100000001", "pair_strikes": 0}
    async with any_db.write() as conn:
        await add.run(conn, row)
    with pytest.raises(IntegrityError):
        async with any_db.write() as conn:
            await add.run(conn, row)
    async with any_db.read() as conn:
        assert await Prepared(select(contacts.c.wa_id)).rows(conn, {}) == [("4915100000001",)]


def test_an_insert_must_give_the_columns_sqlalchemy_would_default() -> None:
    with pytest.raises(ValueError, match="pair_strikes"):
        Prepared(contacts.insert(), columns=["sender_id", "wa_id"])
    with pytest.raises(ValueError, match="names the columns"):
        Prepared(contacts.insert())


async def test_the_reads_of_one_read_block_see_one_snapshot(tmp_path: Path) -> None:
    """On SQLite a prepared read begins the block's transaction: a commit by another process
    between two reads of one block is not half-seen."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'router.db'}")
    other = sqlite3.connect(tmp_path / "router.db", isolation_level=None)
    try:
        async with db.write() as conn:
            await conn.run_sync(events.create)
            await INSERT.run(conn, event_row("m3"))
        async with db.read() as conn:
            before = await BY_MESSAGE.rows(conn, {"m": "m3"})
            other.execute(
                "INSERT INTO message_events (message_id, at, kind) VALUES ('m3', '2026-11-22', "
                "'status')"
            )
            again = await BY_MESSAGE.rows(conn, {"m": "m3"})
        async with db.read() as conn:
            after = await BY_MESSAGE.rows(conn, {"m": "m3"})
    finally:
        other.close()
        await db.dispose()
    assert len(before) == len(again) == 1
    assert len(after) == 2


async def test_an_update_counts_the_rows_it_changed(any_db: Database) -> None:
    """The count fences a dispatcher's writes (adapters/db/outbox.py): 0 means not ours."""
    strike = Prepared(
        update(contacts)
        .where(contacts.c.sender_id == bindparam("s"), contacts.c.pair_strikes < 2)
        .values(pair_strikes=contacts.c.pair_strikes + 1, next_send_at=bindparam("at"))
    )
    add = Prepared(contacts.insert(), columns=["sender_id", "wa_id", "pair_strikes"])
    async with any_db.write() as conn:
        await add.run_many(conn, [{"sender_id": "s1", "wa_id": w, "pair_strikes": 0} for w in "12"])
        counts = [await strike.run(conn, {"s": "s1", "at": AT}) for _ in range(3)]
        assert await strike.run(conn, {"s": "nobody", "at": AT}) == 0
    assert counts == [2, 2, 0]
    async with any_db.read() as conn:
        found = await Prepared(select(contacts.c.pair_strikes, contacts.c.next_send_at)).rows(
            conn, {}
        )
    assert found == [(2, AT), (2, AT)]


class Boom(Exception):
    pass


@pytest.mark.postgres
async def test_on_postgresql_prepared_statements_run_on_asyncpg_in_the_blocks_transaction(
    postgres_db: Database, asyncpg_statements: list[tuple[str, tuple[Any, ...]]]
) -> None:
    """The statements go to asyncpg itself (SQLAlchemy's execution never sees them: that is
    the saving), yet inside the write block's transaction: a block that raises leaves nothing,
    one that ends commits. If a SQLAlchemy upgrade took away what this path needs, the
    statements would go through SQLAlchemy again, and this test fails."""
    db = postgres_db
    through_sqlalchemy: list[str] = []

    def remember(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        through_sqlalchemy.append(statement)

    async def write_then_fail() -> None:
        async with db.write() as conn:
            await INSERT.run(conn, event_row("rolled-back"))
            raise Boom

    event.listen(db._writer.sync_engine, "before_cursor_execute", remember)
    with pytest.raises(Boom):
        await write_then_fail()
    async with db.write() as conn:
        await INSERT.run(conn, event_row("kept"))
    async with db.read() as conn:
        kept = [r[0] for r in await conn.execute(select(events.c.message_id))]
    assert kept == ["kept"]
    inserts = [args[0] for q, args in asyncpg_statements if q.startswith("INSERT INTO message_")]
    assert inserts == ["rolled-back", "kept"]  # both ran on asyncpg
    assert not [q for q in through_sqlalchemy if q.startswith("INSERT INTO message_events")]


@pytest.mark.postgres
async def test_on_postgresql_a_prepared_read_leaves_its_connection_outside_a_transaction(
    postgres_db: Database,
) -> None:
    """Reads run in autocommit (a BEGIN and a ROLLBACK were two round trips of a poll's four):
    the asyncpg path begins no transaction there either."""
    async with postgres_db.read() as conn:
        assert await BY_MESSAGE.rows(conn, {"m": "none"}) == []
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with postgres_db.write() as other:
            state = (
                await other.execute(
                    text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
                )
            ).scalar_one()
    assert state == "idle"  # not "idle in transaction"


@pytest.mark.postgres
async def test_on_postgresql_a_write_cancelled_at_any_point_leaves_no_connection_in_a_transaction(
    postgres_db: Database,
) -> None:
    """Cancelled one, two, ... loop turns into a write block's first statement (its BEGIN
    included), the block leaves no pooled connection inside a transaction, and a later write
    commits for everyone to see. (A BEGIN cut short left asyncpg in a transaction the adapter
    did not know of: every later block on that connection 'committed' into it, unseen.)"""
    db = postgres_db

    async def write(message_id: str) -> None:
        async with db.write() as conn:
            await INSERT.run(conn, event_row(message_id))

    in_transaction = []
    await write("warm")
    for turns in range(12):
        block = asyncio.create_task(write(f"cancelled-{turns}"))
        for _ in range(turns):
            await asyncio.sleep(0)
        block.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await block
        async with db._writer.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            in_transaction.append(driver.is_in_transaction())
    await write("later")
    async with db.read() as conn:
        later = await BY_MESSAGE.rows(conn, {"m": "later"})
    assert not any(in_transaction)
    assert len(later) == 1


@pytest.mark.postgres
async def test_on_postgresql_a_statement_made_stale_by_a_migration_fails_once_then_works(
    postgres_db: Database,
) -> None:
    """Another process changes a column's type: the cached statement fails once, as SQLAlchemy's
    own would, then is prepared afresh (it failed on every later run, a 500 each time)."""
    db = postgres_db
    other = create_async_engine(
        str(db.url), connect_args={"server_settings": {"search_path": db.schema}}
    )

    async def statuses() -> list[tuple[Any, ...]]:
        async with db.write() as conn:
            return await BY_MESSAGE.rows(conn, {"m": "m5"})

    try:
        async with db.write() as conn:
            await INSERT.run(conn, event_row("m5"))
        assert len(await statuses()) == 1
        async with other.begin() as conn:
            await conn.execute(
                text("ALTER TABLE message_events ALTER COLUMN status TYPE varchar(32)")
            )
        with pytest.raises(DBAPIError, match="cached statement plan is invalid"):
            await statuses()
        after = [await statuses() for _ in range(3)]
    finally:
        await other.dispose()
    assert [len(rows) for rows in after] == [1, 1, 1]


@pytest.mark.postgres
async def test_on_postgresql_a_prepared_write_on_a_bare_connection_commits(
    postgres_db: Database,
) -> None:
    """Without ``begin()``, the first statement is SQLAlchemy's (its autobegin), so the
    connection's ``commit()`` has a transaction to commit (the write was lost)."""
    async with postgres_db._writer.connect() as conn:
        await INSERT.run(conn, event_row("m6"))
        await INSERT.run(conn, event_row("m6", status="read"))
        await conn.commit()
    async with postgres_db.read() as conn:
        found = await BY_MESSAGE.rows(conn, {"m": "m6"})
    assert [row[3] for row in found] == ["sent", "read"]
