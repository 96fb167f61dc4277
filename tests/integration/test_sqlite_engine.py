"""The SQLite engine runs its statements inline on the event loop: what a caller sees must stay
what SQLAlchemy over aiosqlite gave (durable commits, rollbacks, SQLAlchemy's errors)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from adapters.db import engine as engine_module
from adapters.db.engine import Database, unreachable


async def insert_then_fail(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(text("INSERT INTO t VALUES (2)"))
        raise RuntimeError("the request failed half-way")


async def insert(db: Database, value: int) -> None:
    async with db.write() as conn:
        await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})


async def test_a_committed_write_is_in_the_file_and_a_failed_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(RuntimeError):
            await insert_then_fail(db)
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT v FROM t"))).scalars().all() == [1]
    finally:
        await db.dispose()
    # Another connection, as another process would: the commit is on disk.
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT v FROM t").fetchall() == [(1,)]


async def test_a_write_lock_held_elsewhere_ends_in_sqlalchemys_operational_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, say
        with pytest.raises(OperationalError, match="locked"):
            await insert(db, 1)
        holder.execute("ROLLBACK")
        await insert(db, 2)  # the lock is free again: the writer works on
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT v FROM t"))).scalars().all() == [2]
    finally:
        holder.close()
        await db.dispose()


async def test_writers_take_turns_in_arrival_order(tmp_path: Path) -> None:
    """A writer that comes straight back for another transaction queues behind those already
    waiting (before, it could take the connection again and again, and a waiter starved)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'router.db'}")
    turns: list[int] = []

    async def writer(n: int) -> None:
        for _ in range(3):
            async with db.write() as conn:
                turns.append(n)
                await conn.execute(text("SELECT 1"))
                await asyncio.sleep(0)  # a block that yields: the others queue meanwhile

    try:
        await asyncio.gather(*(writer(n) for n in range(5)))
    finally:
        await db.dispose()
    assert turns == [0, 1, 2, 3, 4] * 3


def sqlite_error(tmp: Path, sql: str) -> sqlite3.Error:
    """The error SQLite itself raises for ``sql`` (another connection holds the write lock)."""
    holder = sqlite3.connect(tmp / "e.db", isolation_level=None)
    other = sqlite3.connect(tmp / "e.db", isolation_level=None, timeout=0)
    try:
        holder.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        holder.execute("BEGIN IMMEDIATE")
        other.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        holder.close()
        other.close()
    raise AssertionError(f"{sql} raised nothing")


def test_a_locked_sqlite_is_unreachable_and_a_missing_table_is_not(tmp_path: Path) -> None:
    locked = sqlite_error(tmp_path, "BEGIN IMMEDIATE")
    missing = sqlite_error(tmp_path, "SELECT * FROM nowhere")
    assert unreachable(OperationalError("BEGIN IMMEDIATE", None, locked))
    assert not unreachable(OperationalError("SELECT", None, missing))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (PoolTimeout("QueuePool limit reached"), True),
        (
            DBAPIError("SELECT 1", None, Exception("lost"), connection_invalidated=True),
            True,
        ),
        (ProgrammingError("SELEKT", None, sqlite3.ProgrammingError("syntax")), False),
        (IntegrityError("INSERT", None, sqlite3.IntegrityError("UNIQUE")), False),
        (ValueError("a bug of ours"), False),
    ],
)
def test_what_counts_as_the_database_being_unreachable(
    error: BaseException, *, expected: bool
) -> None:
    assert unreachable(error) is expected
