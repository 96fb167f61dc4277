"""The SQLite engine runs its statements inline on the event loop: what a caller sees must stay
what SQLAlchemy over aiosqlite gave (durable commits, rollbacks, SQLAlchemy's errors)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from adapters.db import engine as engine_module
from adapters.db.engine import Database, DatabaseError, sqlite_of, unreachable


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


async def create_table(db: Database, ddl: str = "CREATE TABLE t (v INTEGER)") -> None:
    async with db.write() as conn:
        await conn.execute(text(ddl))


def on_disk(path: Path, sql: str = "SELECT v FROM t ORDER BY v") -> list[tuple[int, ...]]:
    """What another process reading the file sees."""
    with sqlite3.connect(path) as other:
        return other.execute(sql).fetchall()


async def test_writes_of_one_turn_share_a_commit_and_each_returns_once_it_is_on_disk(
    tmp_path: Path,
) -> None:
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    commits: list[str] = []
    seen_after_return: list[bool] = []

    async def insert_and_look(value: int) -> None:
        await insert(db, value)
        seen_after_return.append((value,) in on_disk(path))

    try:
        await create_table(db)
        await trace_writer(db, lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        commits.clear()  # trace_writer's own
        await asyncio.gather(*(insert_and_look(n) for n in range(20)))
    finally:
        await db.dispose()
    assert seen_after_return == [True] * 20  # each caller resumed after its commit
    assert on_disk(path) == [(n,) for n in range(20)]
    assert len(commits) == 1  # twenty requests, one commit (and one fsync)


async def trace_writer(db: Database, callback: Callable[[str], object]) -> None:
    """Have sqlite3 tell ``callback`` each statement the writer connection runs (the COMMIT
    too, on the thread that runs it)."""
    async with db.write() as conn:
        raw = sqlite_of(conn)
        assert raw is not None
        raw.set_trace_callback(callback)


async def slow_commits(db: Database, seconds: float) -> SlowCommits:
    """From now on, every COMMIT of ``db``'s writer takes ``seconds``."""
    slow = SlowCommits(seconds)
    await trace_writer(db, slow)
    slow.threads.clear()  # trace_writer's own COMMIT
    slow.started.clear()
    return slow


class SlowCommits:
    """Every COMMIT of the writer takes ``seconds``; ``started`` is set when one begins."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.threads: list[int] = []
        self.thread_names: list[str] = []
        self.started = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def __call__(self, statement: str) -> None:
        if statement == "COMMIT":
            self.threads.append(threading.get_ident())
            self.thread_names.append(threading.current_thread().name)
            self._loop.call_soon_threadsafe(self.started.set)
            time.sleep(self.seconds)


async def test_the_commit_waits_for_the_disk_off_the_event_loop(tmp_path: Path) -> None:
    """A COMMIT waits for its fsync (milliseconds on a busy disk): meanwhile the event loop
    serves the others, and a write that comes meanwhile joins the next group."""
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    try:
        await create_table(db)
        slow = await slow_commits(db, 0.3)
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        ticks = 0
        first = asyncio.create_task(insert(db, 1))
        await slow.started.wait()
        assert on_disk(path) == []  # the COMMIT is under way
        await insert(db, 2)  # waits for the writers' turn, then commits on its own
        await first
        ticker.cancel()
    finally:
        await db.dispose()
    assert ticks >= 20  # the loop went on turning while the two COMMITs waited
    assert len(slow.threads) == 2
    assert threading.get_ident() not in slow.threads
    assert all(name.startswith("wa-router-commit") for name in slow.thread_names)  # its own
    assert on_disk(path) == [(1,), (2,)]


async def test_dispose_waits_for_a_commit_under_way(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await create_table(db)
    slow = await slow_commits(db, 0.3)
    write = asyncio.create_task(insert(db, 1))
    await slow.started.wait()  # the COMMIT is under way
    await db.dispose()
    assert on_disk(path) == [(1,)]  # dispose returned after the COMMIT, not before it
    await write


async def test_dispose_waits_for_the_writes_queued_behind_a_commit(tmp_path: Path) -> None:
    """Writers waiting for their turn while a COMMIT runs form the next group once it ends:
    dispose waits for that group too, instead of closing under it."""
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await create_table(db)
    slow = await slow_commits(db, 0.2)
    first = asyncio.create_task(insert(db, 1))
    await slow.started.wait()
    queued = [asyncio.create_task(insert(db, n)) for n in (2, 3)]
    await asyncio.sleep(0)  # they are waiting for the writers' turn
    await db.dispose()
    await asyncio.wait_for(asyncio.gather(first, *queued), 2)
    assert on_disk(path) == [(1,), (2,), (3,)]


async def test_after_sqlite_rolls_the_whole_transaction_back_later_blocks_write_nothing(
    tmp_path: Path,
) -> None:
    """SQLite itself sometimes rolls a whole transaction back (a full disk, an I/O error;
    here INSERT OR ROLLBACK stands in). The blocks after it in the same group must fail
    without writing: a SAVEPOINT outside a transaction would begin one of its own, which its
    RELEASE commits, while its caller hears that the group failed."""
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")

    async def roll_everything_back() -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT OR ROLLBACK INTO u VALUES (1)"))

    try:
        await create_table(db, "CREATE TABLE u (v INTEGER PRIMARY KEY)")
        await create_table(db)
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO u VALUES (1)"))
        outcomes = await asyncio.gather(
            insert(db, 1), roll_everything_back(), insert(db, 3), return_exceptions=True
        )
        assert [type(o) for o in outcomes] == [DatabaseError, IntegrityError, DatabaseError]
        assert on_disk(path) == []
        await insert(db, 4)  # the next group commits
    finally:
        await db.dispose()
    assert on_disk(path) == [(4,)]


async def test_a_commit_cancelled_midway_tells_its_blocks_how_it_really_ended(
    tmp_path: Path,
) -> None:
    """Shutting down cancels the task that commits. The COMMIT already under way cannot be
    taken back: the task waits for it, its blocks hear that their writes are on disk, and only
    then does the cancellation go on."""
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await create_table(db)
        slow = await slow_commits(db, 0.3)
        write = asyncio.create_task(insert(db, 1))
        await slow.started.wait()
        group = db._committing
        assert group is not None
        assert group.commit_task is not None
        group.commit_task.cancel()
        await asyncio.sleep(0.05)
        group.commit_task.cancel()  # twice: it still waits for the COMMIT
        await asyncio.wait([group.commit_task])
        assert group.commit_task.cancelled()
        await write  # returns: the write is on disk
        assert on_disk(path) == [(1,)]
        await insert(db, 2)  # and the writer goes on
    finally:
        await db.dispose()
    assert on_disk(path) == [(1,), (2,)]


async def test_a_failed_block_undoes_only_its_own_writes_in_a_shared_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await create_table(db)
        outcomes = await asyncio.gather(
            insert(db, 1), insert_then_fail(db), insert(db, 3), return_exceptions=True
        )
    finally:
        await db.dispose()
    assert [type(o) for o in outcomes] == [type(None), RuntimeError, type(None)]
    assert on_disk(path) == [(1,), (3,)]  # the failed block's 2 is not there


async def test_a_commit_that_fails_fails_every_block_of_its_group_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    """A deferred foreign key is checked at COMMIT: one block's bad row sinks the shared
    commit, so every block of that group hears the error and none of their rows is kept;
    the next group commits as usual."""
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")

    async def add(parent: int) -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO child VALUES (:p)"), {"p": parent})

    try:
        await create_table(db, "CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await create_table(
            db,
            "CREATE TABLE child (parent INTEGER REFERENCES parent (id)"
            " DEFERRABLE INITIALLY DEFERRED)",
        )
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO parent VALUES (1)"))
        outcomes = await asyncio.gather(add(1), add(99), add(1), return_exceptions=True)
        assert [type(o) for o in outcomes] == [IntegrityError] * 3
        assert on_disk(path, "SELECT parent FROM child") == []
        await add(1)  # the writer goes on with the next group
    finally:
        await db.dispose()
    assert on_disk(path, "SELECT parent FROM child") == [(1,)]


async def test_a_block_whose_savepoint_cannot_be_released_fails_with_its_whole_group(
    tmp_path: Path,
) -> None:
    """The block's savepoint is gone when the block ends (SQLite refuses the RELEASE), so its
    writes cannot be told apart from the others' any more: every block of the group fails
    with SQLAlchemy's error and nothing of theirs is kept; the next group commits."""
    path = tmp_path / "router.db"
    db = Database(f"sqlite+aiosqlite:///{path}")

    async def insert_and_release_early(value: int) -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
            raw = sqlite_of(conn)
            assert raw is not None
            raw.execute("RELEASE block")

    try:
        await create_table(db)
        outcomes = await asyncio.gather(
            insert(db, 1), insert_and_release_early(2), insert(db, 3), return_exceptions=True
        )
        assert [type(o) for o in outcomes] == [DatabaseError, OperationalError, DatabaseError]
        assert on_disk(path) == []
        await insert(db, 4)
    finally:
        await db.dispose()
    assert on_disk(path) == [(4,)]
