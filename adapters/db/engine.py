"""Engines and transactions. SQLite: WAL with synchronous=FULL (a commit is on disk), one
writer connection (writes queue in-process instead of spinning on SQLite's lock) and BEGIN
IMMEDIATE (so another process, a `wa-router worker`, waits instead of deadlocking).

SQLite calls run inline on the event loop's thread instead of on aiosqlite's worker threads.
A statement here takes tens of microseconds, far less than the hop to a thread and back
through a busy event loop: with the hop, a write transaction of five statements held the
single writer for five turns of the loop, and the accept route peaked at about 470
requests/s. Inline, a transaction never yields mid-way. The one exception is a group's COMMIT,
which waits for the disk (0.3 ms on our machines, milliseconds on a busy disk): it runs on a
thread of its own, and the loop serves other requests meanwhile.
The cost: a statement that must wait (another process holding SQLite's write lock) blocks
the loop for that wait, which is why several processes belong on PostgreSQL.

SQLite writes are group-committed: the write blocks that come in one turn of the loop share one
transaction (each in a savepoint of its own, so a block that fails undoes only itself), and
each block's caller resumes only once that transaction's COMMIT is on disk. One commit, fsync
and connection checkout serve many requests, and "committed" still means durable."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from asyncio import Future
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import msgspec
from sqlalchemy import event, text
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseError(Exception):
    """The database could not be reached or refused the operation."""


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be used right now (down, refusing connections,
    a lost connection, no pooled connection in time, SQLite's write lock held too long), as
    opposed to a fault of the statement itself."""
    if isinstance(exc, DatabaseError | OSError | PoolTimeout | DisconnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc.orig, sqlite3.Error):
        # SQLite calls a missing table an OperationalError too: its result code tells.
        code = getattr(exc.orig, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _SQLITE_UNAVAILABLE
    return isinstance(exc, OperationalError | InterfaceError)


#: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN (primary codes).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, 13, 14})


class _RunAtOnce:
    """Stands in for aiosqlite's queue to its worker thread: each call it is handed runs at
    once, on the caller's thread, and its future is done before ``await`` looks at it (so the
    awaiting coroutine does not yield to the loop)."""

    def put_nowait(self, item: tuple[Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting caller, as aiosqlite does
            if future is None:
                raise
            future.set_exception(exc)
        else:
            if future is not None:
                future.set_result(result)


class _InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection without its thread: SQLAlchemy's aiosqlite dialect drives it
    unchanged, and every call runs inline."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _RunAtOnce()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no thread to start


def _inline_creator(url: str, *, writer: bool) -> Callable[[], Any]:
    (database,), options = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    settings: dict[str, Any] = {
        **options,
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        "check_same_thread": not writer,  # the writer commits on a thread (_Group.end)
    }

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, **settings)
        return connection

    async def connect() -> aiosqlite.Connection:
        return await _InlineConnection(connector)

    return connect


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


#: JSON columns are encoded and decoded by msgspec: json.dumps took 4 % of the accept route's
#: CPU. The text differs only in spacing and in UTF-8 where json escaped it; both read it.
JSON_CODEC: dict[str, Any] = {
    "json_serializer": _json_text,
    "json_deserializer": msgspec.json.decode,
}


def _sqlite_engine(url: str, *, writer: bool) -> AsyncEngine:
    engine = create_async_engine(
        url,
        **JSON_CODEC,
        async_creator=_inline_creator(url, writer=writer),
        pool_size=1 if writer else 4,
        max_overflow=0,
        pool_timeout=60,
        hide_parameters=True,  # errors must not carry message bodies or numbers into logs
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver; SQLAlchemy's "begin" event emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Straight to sqlite3 (the connection is inline): through SQLAlchemy's execution
        # machinery a BEGIN cost more than the transaction's own statements.
        inline: _InlineConnection = connection.connection.driver_connection
        if inline._conn.in_transaction:
            return  # a prepared statement of a read block began it (adapters/db/prepared.py)
        try:
            inline._conn.execute(begin)
        except sqlite3.OperationalError as exc:  # "database is locked": as SQLAlchemy raises it
            raise OperationalError(begin, None, exc) from exc

    return engine


def sqlite_of(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``conn`` when it is one of ours (run inline), else None."""
    driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    return driver._conn if isinstance(driver, _InlineConnection) else None


class _Group:
    """An open SQLite write transaction that the write blocks of one turn of the loop share."""

    def __init__(
        self,
        conn: AsyncConnection,
        sqlite: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        committer: ThreadPoolExecutor,
    ) -> None:
        self.conn = conn
        self.sqlite = sqlite
        self.committer = committer
        self.committed: Future[None] = loop.create_future()
        self.commit_task: asyncio.Task[None] | None = None
        #: Why the shared transaction cannot commit (a block's failure took it down).
        self.lost: BaseException | None = None

    def undo_block(self, exc: BaseException) -> None:
        """Roll back the failed block's savepoint. If SQLite already rolled back the whole
        transaction (a full disk, an I/O error) or the rollback itself fails, every block of
        the group fails at commit: none of their writes is on disk."""
        try:
            if self.sqlite.in_transaction:
                self.sqlite.execute("ROLLBACK TO block")
                self.sqlite.execute("RELEASE block")
                return
        except sqlite3.Error:
            pass
        if self.lost is None:
            self.lost = DatabaseError(f"the write transaction was lost: {exc!r}")

    def release_block(self) -> None:
        """Keep the ended block's writes in the group. If SQLite refuses, the block fails with
        SQLAlchemy's error, and its writes are undone like a failed block's (or, when even
        that fails, the whole group is)."""
        try:
            self.sqlite.execute("RELEASE block")
        except sqlite3.Error as exc:
            self.undo_block(exc)
            raise as_sqlalchemy("RELEASE block", exc) from exc

    async def end(self) -> None:
        """Commit, and tell every block of the group how it ended.

        The COMMIT runs on the committer thread: it waits for the disk (0.3 ms on our machines,
        milliseconds on a busy disk), sqlite3 lets go of the GIL meanwhile, and the loop serves
        other requests. Nothing else touches the connection until it ends: the group holds the
        writers' turn, and a cancellation waits for the COMMIT to end (then the blocks hear
        its real outcome, and the cancellation goes on)."""
        if self.lost is not None:
            self.fail(self.lost)
            await self.rollback()
            return
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(self.committer, self.sqlite.commit)
        except RuntimeError as exc:  # the committer was shut down: nothing is committed
            self.fail(DatabaseError(f"the database is closing: {exc}"))
            await self.rollback()
            return
        cancelled = await _wait_out(done)
        if (error := done.exception()) is None:
            self.committed.set_result(None)
        else:
            self.fail(as_sqlalchemy("COMMIT", error))
            await self.rollback()
        if cancelled:
            raise asyncio.CancelledError

    async def rollback(self) -> None:
        with contextlib.suppress(SQLAlchemyError, sqlite3.Error):
            if self.sqlite.in_transaction:
                await self.conn.rollback()

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.committed.cancel()
            return
        self.committed.set_exception(exc)
        self.committed.exception()  # retrieved: a group whose callers all left must not warn


async def _wait_out(future: asyncio.Future[Any]) -> bool:
    """Until ``future`` is done, whatever cancellations come meanwhile; whether one came."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def as_sqlalchemy(statement: str, exc: BaseException) -> BaseException:
    """sqlite3's error as SQLAlchemy raises it (IntegrityError, OperationalError...), so
    callers and :func:`unreachable` see one kind of error whichever path ran the statement;
    any other exception as it is."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    return DBAPIError.instance(statement, None, exc, sqlite3.Error, hide_parameters=True)


class Database:
    """The process's engines: one for writes, one for reads (the same one on PostgreSQL)."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        """``schema`` (PostgreSQL only) sets the search_path: the tests give each test its own."""
        self.url = url
        self.schema = schema
        self.dialect = make_url(url).get_backend_name()
        self._turns: tuple[asyncio.AbstractEventLoop, asyncio.Lock, asyncio.Lock] | None = None
        self._group: _Group | None = None
        #: The group whose COMMIT is under way (no longer ``_group``: later blocks begin anew).
        self._committing: _Group | None = None
        #: SQLite: the one thread the writer's COMMITs wait on (see _Group.end).
        self._committer: ThreadPoolExecutor | None = None
        if self.is_sqlite:
            self._writer = _sqlite_engine(url, writer=True)
            self._reader = _sqlite_engine(url, writer=False)
        else:
            connect_args = {"server_settings": {"search_path": schema}} if schema else {}
            # Ten connections and no overflow: on two cores, 16 or 20 served fewer requests
            # a second (more backends contend for the CPU), and overflow connections were
            # opened and closed again under load (a connect is a backend process forked).
            self._writer = create_async_engine(
                url,
                # Whatever the server's default: each statement of a write sees what is
                # committed when it starts. The Idempotency-Key's lock relies on it (a response
                # committed before the lock was ours must be found), and so does the claim's
                # SKIP LOCKED re-check of a row another dispatcher just changed.
                isolation_level="READ COMMITTED",
                pool_size=10,
                max_overflow=0,
                # No ping at checkout: it was a round trip more in every transaction (accept
                # went from 2.8-3.1 to 2.4-2.7 ms of CPU without it). A connection the server
                # dropped fails its next statement as unreachable (a 503), and that failure
                # makes the pool replace every connection opened before it.
                pool_pre_ping=False,
                connect_args=connect_args,
                hide_parameters=True,
                **JSON_CODEC,
            )
            # Reads run without BEGIN and ROLLBACK, two round trips of a poll's four: under
            # READ COMMITTED a transaction gave each statement its own snapshot anyway.
            self._reader = self._writer.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block ends without an exception. On SQLite, the
        block joins the current group commit (see the module's note) and returns once that
        group's COMMIT is on disk; a block that raises undoes its own writes only. Writers take
        turns first come, first served: the pool's own queue lets a newcomer take the
        connection before a waiter that was just woken, which re-queues at the back (under 32
        concurrent accepts, some waited the whole 8-second run)."""
        if not self.is_sqlite:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with self._turn(writer=True):
            group = self._group or await self._open_group()
            sqlite = group.sqlite
            if group.lost is None and not sqlite.in_transaction:
                # SQLite rolled the whole transaction back (a full disk, an I/O error): a
                # SAVEPOINT now would begin a transaction of its own, committed by its RELEASE.
                group.lost = DatabaseError("the write transaction was lost: SQLite rolled it back")
            if group.lost is not None:
                raise DatabaseError(str(group.lost))
            sqlite.execute("SAVEPOINT block")
            try:
                yield group.conn
            except BaseException as exc:
                group.undo_block(exc)
                raise
            group.release_block()
        await asyncio.shield(group.committed)

    async def _open_group(self) -> _Group:
        """Begin a group's transaction and schedule its commit, which queues for the writers'
        turn behind the blocks already waiting: they join this group."""
        conn = self._writer.connect()
        await conn.start()
        try:
            await conn.begin()
            raw = await conn.get_raw_connection()
        except BaseException:
            await conn.close()
            raise
        inline: _InlineConnection = raw.driver_connection  # type: ignore[assignment]
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="wa-router-commit")
        group = self._group = _Group(
            conn, inline._conn, asyncio.get_running_loop(), self._committer
        )
        group.commit_task = asyncio.create_task(self._commit(group))
        return group

    async def _commit(self, group: _Group) -> None:
        turn = self._turn(writer=True)
        try:
            await turn.acquire()
        except BaseException as exc:  # cancelled before its turn: the loop is closing
            if self._group is group:
                self._group = None  # no later block may join a group nobody will commit
            group.fail(exc)
            raise
        try:
            self._group = None  # later blocks begin the next group
            self._committing = group
            await group.end()
        except BaseException as exc:
            if not group.committed.done():  # a bug of ours: its blocks must still hear
                group.fail(exc)
                await group.rollback()
            raise
        finally:
            self._committing = None
            try:
                await group.conn.close()
            finally:
                turn.release()

    def _turn(self, *, writer: bool) -> asyncio.Lock:
        """The writers' or the readers' FIFO lock, made for the running loop (a test may run
        several)."""
        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns[0] is not loop:
            self._turns = (loop, asyncio.Lock(), asyncio.Lock())
            self._group = None
        return self._turns[1] if writer else self._turns[2]

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads. On SQLite, readers take turns too, for the same reason as
        writers (a poll waited out a 4-second run behind later ones): the statements run
        inline on the one event loop thread, so reads never ran side by side anyway. A read
        block must not open another read."""
        if not self.is_sqlite:
            async with self._reader.connect() as conn:
                yield conn
            return
        async with self._sqlite(self._reader, self._turn(writer=False)) as conn:
            yield conn

    @asynccontextmanager
    async def _sqlite(
        self, engine: AsyncEngine, turn: asyncio.Lock
    ) -> AsyncIterator[AsyncConnection]:
        """A pooled SQLite connection, in ``turn``. Closed with a plain ``await``: SQLAlchemy's
        own ``async with`` closes a connection in a task of its own (safe from cancellation
        midway), three turns of the loop during which the next caller waited for the lock;
        inline, the close cannot be interrupted anyway (it never yields)."""
        async with turn:
            conn = engine.connect()
            await conn.start()
            try:
                yield conn
            finally:
                await conn.close()

    async def ping(self) -> None:
        try:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseError(str(exc)) from exc

    async def dispose(self) -> None:
        # Until no group is left to commit: writers queued behind a COMMIT open the next group
        # (with the committer) once it ends. Groups of another loop are that loop's business.
        loop = asyncio.get_running_loop()
        while pending := [
            group.commit_task
            for group in (self._committing, self._group)
            if group is not None
            and group.commit_task is not None
            and not group.commit_task.done()
            and group.commit_task.get_loop() is loop
        ]:
            await asyncio.wait(pending)  # their callers hear how they ended
        await self._writer.dispose()
        if self.is_sqlite:  # on PostgreSQL the reader shares the writer's pool
            await self._reader.dispose()
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None
