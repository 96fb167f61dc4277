"""The hot paths' statements, run on SQLite below SQLAlchemy's execution layer.

A :class:`Prepared` is a Core statement compiled once per dialect. On SQLite (whose driver
connection runs inline, see ``engine.py``) it goes straight to sqlite3 with the values put
through the same bind and result processors SQLAlchemy would use (so a row written here reads
back the same through SQLAlchemy, and the other way round); on PostgreSQL it is executed by
SQLAlchemy as any statement. Profiled under the accept load, SQLAlchemy's per-statement work
(execution context, parameter processing, cursor wrapping, result object) took about 20 us a
statement of our CPU time where sqlite3 itself took a few: the accept route runs four."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Delete, Insert, Select, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.engine import sqlite_of

Processor = Callable[[Any], Any] | None


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
        self._plan: _Plan | None = None
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

    def _sqlite(self, conn: AsyncConnection) -> tuple[sqlite3.Connection, _Plan] | None:
        raw = sqlite_of(conn)
        if raw is None:
            return None
        plan = self._plan
        if plan is None:
            plan = self._plan = self._plan_for(conn.dialect)
        if not raw.in_transaction:
            raw.execute("BEGIN")  # a read block's snapshot (the engine skips its own BEGIN)
        return raw, plan

    async def run(self, conn: AsyncConnection, params: Mapping[str, Any]) -> int:
        """Execute; the number of rows an INSERT, UPDATE or DELETE changed."""
        found = self._sqlite(conn)
        if found is None:
            return int((await conn.execute(self.statement, dict(params))).rowcount or 0)
        raw, plan = found
        try:
            return raw.execute(plan.sql, self._values(plan, params)).rowcount
        except sqlite3.Error as exc:
            raise _wrapped(plan, exc) from exc

    async def run_many(self, conn: AsyncConnection, params: Sequence[Mapping[str, Any]]) -> None:
        if not params:
            return
        found = self._sqlite(conn)
        if found is None:
            await conn.execute(self.statement, [dict(p) for p in params])
            return
        raw, plan = found
        try:
            raw.executemany(plan.sql, [self._values(plan, p) for p in params])
        except sqlite3.Error as exc:
            raise _wrapped(plan, exc) from exc

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        found = self._sqlite(conn)
        if found is None:
            return [tuple(row) for row in await conn.execute(self.statement, dict(params))]
        raw, plan = found
        try:
            fetched = raw.execute(plan.sql, self._values(plan, params)).fetchall()
        except sqlite3.Error as exc:
            raise _wrapped(plan, exc) from exc
        results = plan.results
        if not any(results):
            return fetched
        return [
            tuple(v if p is None else p(v) for p, v in zip(results, row, strict=True))
            for row in fetched
        ]

    async def first(
        self, conn: AsyncConnection, params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        found = await self.rows(conn, params)
        return found[0] if found else None


def _wrapped(plan: _Plan, exc: sqlite3.Error) -> DBAPIError:
    """sqlite3's error as SQLAlchemy raises it (IntegrityError, OperationalError...), so
    callers and ``unreachable`` see one kind of error whichever path ran the statement."""
    wrapped = DBAPIError.instance(plan.sql, None, exc, sqlite3.Error, hide_parameters=True)
    assert isinstance(wrapped, DBAPIError)  # noqa: S101 - a sqlite3.Error always maps to one
    return wrapped
