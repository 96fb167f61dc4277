"""Schema migrations (Alembic), callable from the CLI and from `serve` at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(connection: Connection, url: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


def _process_lock() -> asyncio.Lock:
    """Alembic keeps its context in module globals: two migrations must never interleave in one
    process (across processes, the database locks below serialise them)."""
    loop = asyncio.get_running_loop()
    return _locks.setdefault(loop, asyncio.Lock())


async def upgrade_to_head(database: Database) -> None:
    """Apply every pending migration in one transaction (PostgreSQL runs DDL transactionally)."""
    async with _process_lock(), database.write() as conn:
        if conn.dialect.name == "postgresql":
            # Several processes starting at once: one migrates, the others wait, then find the
            # schema at head. (SQLite serialises through BEGIN IMMEDIATE.)
            await conn.execute(text("SELECT pg_advisory_xact_lock(7400311)"))
        await conn.run_sync(_upgrade, database.url)


def known_revisions(url: str) -> frozenset[str]:
    """Every revision the migrations shipped with this code know of."""
    scripts = ScriptDirectory.from_config(alembic_config(url))
    return frozenset(script.revision for script in scripts.walk_revisions())


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def current_revision(conn: AsyncConnection) -> str | None:
    def _current(sync: Connection) -> str | None:
        return MigrationContext.configure(sync).get_current_revision()

    return await conn.run_sync(_current)
