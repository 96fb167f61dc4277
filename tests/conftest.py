from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from asyncpg.prepared_stmt import PreparedStatement
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.db.engine import Database
from adapters.db.migrate import upgrade_to_head

POSTGRES_URL = os.environ.get("WA_ROUTER_TEST_POSTGRES_URL")
IN_CI = os.environ.get("CI", "").lower() == "true"
#: The database behind the fixtures that are not parametrised over both backends (`db`, and
#: the e2e `router`): "sqlite" by default, "postgres" for CI's second pass of the suite.
SUITE_BACKEND = os.environ.get("WA_ROUTER_TEST_BACKEND", "sqlite")
if SUITE_BACKEND not in ("sqlite", "postgres"):
    raise ValueError(f"WA_ROUTER_TEST_BACKEND must be sqlite or postgres, not {SUITE_BACKEND!r}")


def postgres_url_or_skip() -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    if IN_CI:
        pytest.fail("CI=true but WA_ROUTER_TEST_POSTGRES_URL is not set: PostgreSQL tests must run")
    pytest.skip("PostgreSQL tests run when WA_ROUTER_TEST_POSTGRES_URL is set")


async def _postgres_schema(url: str, schema: str, *, create: bool) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if create:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            else:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


async def open_database(kind: str, tmp_path: Path) -> tuple[Database, str | None]:
    if kind == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'router.db'}")
        await upgrade_to_head(db)
        return db, None
    url = postgres_url_or_skip()
    schema = "t_" + uuid.uuid4().hex[:16]
    await _postgres_schema(url, schema, create=True)
    db = Database(url, schema=schema)
    await upgrade_to_head(db)
    return db, schema


@asynccontextmanager
async def opened_database(kind: str, tmp_path: Path) -> AsyncIterator[Database]:
    """:func:`open_database`, disposed of (and its PostgreSQL schema dropped) afterwards."""
    db, schema = await open_database(kind, tmp_path)
    try:
        yield db
    finally:
        await db.dispose()
        if schema is not None and POSTGRES_URL:
            await _postgres_schema(POSTGRES_URL, schema, create=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database: SQLite (temp file) and PostgreSQL (own schema) when configured."""
    async with opened_database(request.param, tmp_path) as db:
        yield db


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database of the suite's backend (a SQLite temp file by default)."""
    async with opened_database(SUITE_BACKEND, tmp_path) as database:
        yield database


@pytest.fixture
async def postgres_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database (own schema, in ``db.schema``), for tests of what only
    PostgreSQL does; mark them ``postgres``."""
    async with opened_database("postgres", tmp_path) as db:
        yield db


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test (for code that takes only a URL)."""
    base = postgres_url_or_skip()
    name = "wr_t_" + uuid.uuid4().hex[:12]
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
def asyncpg_statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Every statement run through an asyncpg prepared statement from here on (``fetch``,
    ``fetchrow``, ``executemany``), with its arguments, as (query, args): those
    adapters/db/prepared.py runs on asyncpg itself, and SQLAlchemy's own single-row
    statements. Not BEGIN, COMMIT or SQLAlchemy's executemany (they run on the connection)."""
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def spy(run: Callable[..., Awaitable[Any]], many: bool) -> Callable[..., Awaitable[Any]]:
        async def recording(statement: PreparedStatement, *args: Any, **kwargs: Any) -> Any:
            if many:
                rows = list(args[0])
                args = (rows, *args[1:])
            else:
                rows = [args]
            seen.extend((statement.get_query(), tuple(row)) for row in rows)
            return await run(statement, *args, **kwargs)

        return recording

    for name, many in (("fetch", False), ("fetchrow", False), ("executemany", True)):
        monkeypatch.setattr(PreparedStatement, name, spy(getattr(PreparedStatement, name), many))
    return seen
