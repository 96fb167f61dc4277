"""Migrations: several processes may start at once; the schema ends at head either way."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.db.engine import Database
from adapters.db.migrate import current_revision, head_revision, upgrade_to_head
from tests.conftest import fresh_postgres_database

pytestmark = pytest.mark.slow
WA_ROUTER = str(Path(sys.executable).parent / "wa-router")


def _migrate_in_three_processes(url: str) -> None:
    env = {**os.environ, "WA_ROUTER_DATABASE_URL": url}
    processes = [
        subprocess.Popen(
            [WA_ROUTER, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs


async def _revision(url: str) -> str | None:
    db = Database(url)
    try:
        async with db.read() as conn:
            return await current_revision(conn)
    finally:
        await db.dispose()


async def test_three_processes_migrating_one_sqlite_file_at_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"

    await asyncio.to_thread(_migrate_in_three_processes, url)

    assert await _revision(url) == head_revision(url)


@pytest.mark.postgres
async def test_three_processes_migrating_one_postgresql_database_at_once() -> None:
    async with fresh_postgres_database() as url:
        await asyncio.to_thread(_migrate_in_three_processes, url)
        assert await _revision(url) == head_revision(url)


async def test_concurrent_upgrades_in_one_process_are_serialised(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    databases = [Database(url) for _ in range(3)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(upgrade_to_head(db) for db in databases)), timeout=20
        )
    finally:
        for db in databases:
            await db.dispose()
    assert await _revision(url) == head_revision(url)
