"""The PostgreSQL pool checks no connection out with a ping (a round trip more in every
transaction): a connection the server dropped is found out by its next statement."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.db.engine import Database, unreachable
from tests.conftest import POSTGRES_URL, _postgres_schema, open_database

pytestmark = pytest.mark.postgres


async def _backend_pid(db: Database, together: asyncio.Barrier | None = None) -> int:
    async with db.read() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        if together is not None:
            await together.wait()  # keep this connection until the others are taken
    return int(pid)


async def test_after_the_server_drops_the_pools_connections_one_request_fails_then_all_work(
    tmp_path: Path,
) -> None:
    """The statement that meets a dropped connection fails with an error that counts as the
    database being unreachable (a 503 `database_unavailable`, never a 500); that failure
    discards every connection the pool opened before it, so the requests after it work."""
    db, schema = await open_database("postgres", tmp_path)
    admin = create_async_engine(POSTGRES_URL or "")
    try:
        together = asyncio.Barrier(4)
        pids = await asyncio.gather(*(_backend_pid(db, together) for _ in range(4)))
        assert len(set(pids)) == 4  # four pooled connections
        async with admin.begin() as conn:
            for pid in pids:
                await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})

        with pytest.raises(DBAPIError) as failed:
            await _backend_pid(db)
        assert unreachable(failed.value)
        after = await asyncio.gather(*(_backend_pid(db) for _ in range(4)))
        async with db.write() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await admin.dispose()
        await db.dispose()
        if schema is not None and POSTGRES_URL:
            await _postgres_schema(POSTGRES_URL, schema, create=False)
    assert not set(after) & set(pids)  # new connections
