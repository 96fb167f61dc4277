"""The hot paths' statements, run below SQLAlchemy's execution layer.

A :class:`Prepared` is a Core statement compiled once per dialect, run straight on the driver
with the values put through the same bind and result processors SQLAlchemy would use (so a row
written here reads back the same through SQLAlchemy, and the other way round):

- on SQLite (whose driver connection runs inline, see ``engine.py``) on sqlite3. Profiled under
  the accept load, SQLAlchemy's per-statement work (execution context, parameter processing,
  cursor wrapping, result object) took about 20 us a statement of our CPU time where sqlite3
  itself took a few: the accept route runs four.
- on PostgreSQL on asyncpg, inside the transaction SQLAlchemy's asyncpg adapter keeps (begun
  the way the adapter begins it, under its lock). Errors go through SQLAlchemy's own handling,
  so a caller sees the same exceptions, and a dropped connection invalidates the pool as it
  would. Three alternating pairs of 5 s runs on the bench's load: accept 1,013-1,232 →
  1,315-1,428 req/s (router CPU 0.80-0.98 → 0.69-0.75 ms a request), poll 1,602-1,729 →
  1,961-2,302 (0.57-0.62 → 0.43-0.50 ms).

Anything else runs through SQLAlchemy as any statement: another driver or SQLAlchemy minor
release, an adapter without what the asyncpg path needs, a connection SQLAlchemy has
invalidated, or the first statement of a connection that was not begun (SQLAlchemy's
autobegin)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from sqlalchemy import Delete, Insert, Select, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import greenlet_spawn, is_exit_exception

from adapters.db.engine import as_sqlalchemy, sqlite_of

Processor = Callable[[Any], Any] | None

#: What the asyncpg path uses of SQLAlchemy's asyncpg adapter (not public API: checked, and
#: tests/integration/test_prepared.py fails if the path is not taken).
_ADAPTER_API = (
    "_connection",
    "_execute_mutex",
    "_transaction",
    "_start_transaction",
    "_handle_exception",
    "_prepare",
    "autocommit",
    "dbapi",
)


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    #: For each ``?`` in order: the parameter's name, its bind processor, whether the caller
    #: must give it, and else the value the statement holds (a literal).
    binds: tuple[tuple[str, Processor, bool, Any], ...]
    results: tuple[Processor, ...]


class Prepared:
    """One statement; ``columns`` names an INSERT's columns (those the caller passes)."""

    def __init__(
        self,
        statement: Select[Any] | Insert | Update | Delete,
        *,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.statement = statement
        self._columns = list(columns) if columns is not None else None
        #: By dialect and driver: one process may use several (the tests do).
        self._plans: dict[tuple[str, str], _Plan] = {}
        if isinstance(statement, Insert):
            if columns is None:
                raise ValueError("an INSERT names the columns it is given")
            table = statement.table
            missing = [
                c.key
                for c in table.columns
                if c.key not in columns and (c.default is not None or c.onupdate is not None)
            ]
            if missing:  # SQLAlchemy would fill them in; this path would not
                raise ValueError(f"columns with client-side defaults must be given: {missing}")
        if isinstance(statement, Update) and any(
            c.onupdate is not None for c in statement.table.columns
        ):
            raise ValueError("an UPDATE of a table with client-side onupdate is not prepared")
        #: What a row holds: a SELECT's columns, or what an INSERT, UPDATE or DELETE returns.
        self.columns = tuple(
            statement.selected_columns
            if isinstance(statement, Select)
            else statement.exported_columns
        )
        self.names: tuple[str, ...] = tuple(str(c.key) for c in self.columns)

    def _plan_for(self, dialect: Dialect) -> _Plan:
        compiled = self.statement.compile(dialect=dialect, column_keys=self._columns)
        binds = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            if bind.expanding or bind.callable is not None:
                raise ValueError(f"{name}: expanding or callable parameters are not prepared")
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            binds.append((name, process, bind.required, bind.value))
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in self.columns
        )
        return _Plan(str(compiled), tuple(binds), results)

    def _values(self, plan: _Plan, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, process, required, literal in plan.binds:
            value = params[name] if required else params.get(name, literal)
            values.append(value if process is None else process(value))
        return values

    def _plan_of(self, dialect: Dialect) -> _Plan:
        key = (dialect.name, dialect.driver)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan_for(dialect)
        return plan

    def _sqlite(self, conn: AsyncConnection) -> tuple[sqlite3.Connection, _Plan] | None:
        raw = sqlite_of(conn)
        if raw is None:
            return None
        plan = self._plan_of(conn.dialect)
        if not raw.in_transaction:
            raw.execute("BEGIN")  # a read block's snapshot (the engine skips its own BEGIN)
        return raw, plan

    async def run(self, conn: AsyncConnection, params: Mapping[str, Any]) -> int:
        """Execute; the number of rows an INSERT, UPDATE or DELETE changed."""
        found = self._sqlite(conn)
        if found is not None:
            raw, plan = found
            try:
                return raw.execute(plan.sql, self._values(plan, params)).rowcount
            except sqlite3.Error as exc:
                raise as_sqlalchemy(plan.sql, exc) from exc
        adapter = _asyncpg_of(conn)
        if adapter is None:
            return int((await conn.execute(self.statement, dict(params))).rowcount or 0)
        plan = self._plan_of(conn.dialect)
        values = self._values(plan, params)
        status: str = await _on_asyncpg(conn, adapter, plan, values, _status_of(values))
        # "INSERT 0 1", "UPDATE 3", "DELETE 0": the count is the last word.
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def run_many(self, conn: AsyncConnection, params: Sequence[Mapping[str, Any]]) -> None:
        if not params:
            return
        found = self._sqlite(conn)
        if found is not None:
            raw, plan = found
            try:
                raw.executemany(plan.sql, [self._values(plan, p) for p in params])
            except sqlite3.Error as exc:
                raise as_sqlalchemy(plan.sql, exc) from exc
            return
        adapter = _asyncpg_of(conn)
        if adapter is None:
            await conn.execute(self.statement, [dict(p) for p in params])
            return
        plan = self._plan_of(conn.dialect)
        rows = [self._values(plan, p) for p in params]
        await _on_asyncpg(conn, adapter, plan, rows, lambda prepared: prepared.executemany(rows))

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        found = self._sqlite(conn)
        if found is not None:
            raw, plan = found
            try:
                fetched = raw.execute(plan.sql, self._values(plan, params)).fetchall()
            except sqlite3.Error as exc:
                raise as_sqlalchemy(plan.sql, exc) from exc
        else:
            adapter = _asyncpg_of(conn)
            if adapter is None:
                return [tuple(row) for row in await conn.execute(self.statement, dict(params))]
            plan = self._plan_of(conn.dialect)
            values = self._values(plan, params)
            fetched = await _on_asyncpg(
                conn, adapter, plan, values, lambda prepared: prepared.fetch(*values)
            )
        results = plan.results
        if not any(results):
            return [tuple(row) for row in fetched]
        return [
            tuple(v if p is None else p(v) for p, v in zip(results, row, strict=True))
            for row in fetched
        ]

    async def first(
        self, conn: AsyncConnection, params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        found = await self.rows(conn, params)
        return found[0] if found else None


def _status_of(values: Sequence[Any]) -> Callable[[Any], Awaitable[str]]:
    """Run a prepared statement for its status ("INSERT 0 1", "UPDATE 3")."""

    async def run(prepared: Any) -> str:
        await prepared.fetch(*values)
        return str(prepared.get_statusmsg())

    return run


#: Adapter classes checked for what the asyncpg path uses (one ``hasattr`` sweep each).
_ADAPTER_CLASSES: dict[type, bool] = {}
#: The SQLAlchemy minor whose adapter this path was written against and tested with: 2.0's
#: adapter set ``_transaction`` before BEGIN succeeded, which this path could not tell apart.
_SQLALCHEMY_MINOR = tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2]) == (2, 1)


def _asyncpg_of(conn: AsyncConnection) -> Any | None:
    """SQLAlchemy's asyncpg adapter under ``conn``, when the asyncpg path can use it: the
    connection is valid, and either in autocommit or inside a transaction SQLAlchemy has begun
    (a bare ``connect()`` autobegins on its first statement: that one goes through SQLAlchemy,
    so its ``commit()`` has a transaction to commit)."""
    sync = conn.sync_connection
    if not _SQLALCHEMY_MINOR or conn.dialect.driver != "asyncpg" or sync is None:
        return None
    if sync.invalidated or sync.closed:
        return None  # SQLAlchemy reconnects (or refuses) as it sees fit
    adapter: Any = sync.connection.dbapi_connection
    usable = _ADAPTER_CLASSES.get(type(adapter))
    if usable is None:
        usable = _ADAPTER_CLASSES[type(adapter)] = all(
            hasattr(adapter, name) for name in _ADAPTER_API
        )
    if not usable or not (adapter.autocommit or sync.in_transaction()):
        return None
    return adapter


async def _on_asyncpg(
    conn: AsyncConnection,
    adapter: Any,
    plan: _Plan,
    values: Any,
    call: Callable[[Any], Awaitable[Any]],
) -> Any:
    """``call(asyncpg_prepared_statement)`` as SQLAlchemy's adapter and execution context run
    a statement:

    - under the adapter's lock, in its transaction (begun now unless the connection is in
      autocommit, as the adapter would);
    - the statement prepared through its cache, shared with SQLAlchemy's own statements
      (asyncpg's ``Connection.fetch`` with its own cache cost 8-15 % more of the accept route);
    - a database error handled by SQLAlchemy as its own: the same exception classes, a dropped
      connection invalidates the connection and the pool, and a statement whose cached plan a
      schema change made stale (a migration in another process) makes the dialect re-prepare;
    - a cancellation or timeout mid-statement invalidates the connection, as SQLAlchemy does
      with any exit exception: a BEGIN cut short leaves asyncpg in a transaction the adapter
      does not know of, and a connection in that state must never go back to the pool."""
    try:
        async with adapter._execute_mutex:
            try:
                if adapter._transaction is None:
                    await adapter._start_transaction()
                schema_as_of = getattr(conn.dialect, "_invalidate_schema_cache_asof", 0)
                prepared, _ = await adapter._prepare(plan.sql, schema_as_of)
                return await call(prepared)
            except Exception as exc:
                if not is_exit_exception(exc):
                    adapter._handle_exception(exc)  # raises the DB-API error SQLAlchemy expects
                raise
    except BaseException as error:
        sync = conn.sync_connection
        assert sync is not None  # noqa: S101 - checked by _asyncpg_of
        if is_exit_exception(error):
            await greenlet_spawn(sync.invalidate, error)
            raise
        if not isinstance(error, adapter.dbapi.Error):
            raise
        dbapi = adapter.dbapi
        if isinstance(error, dbapi.InvalidCachedStatementError | dbapi.InternalServerError):
            conn.dialect._invalidate_schema_cache()  # type: ignore[attr-defined]
        await greenlet_spawn(sync._handle_dbapi_exception, error, plan.sql, values, None, None)
        raise  # pragma: no cover - _handle_dbapi_exception always raises
