"""The PostgreSQL pool checks no connection out with a ping (a round trip more in every
transaction): a connection the server dropped is found out by its next statement."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.db.engine import Database, unreachable
from adapters.db.prepared import Prepared
from tests.conftest import fresh_postgres_database

pytestmark = pytest.mark.postgres

#: A statement run on asyncpg itself (adapters/db/prepared.py), not by SQLAlchemy.
BACKEND_PID = Prepared(select(func.pg_backend_pid()))


async def _backend_pid(
    db: Database, together: asyncio.Barrier | None = None, *, prepared: bool = False
) -> int:
    async with db.read() as conn:
        if prepared:
            [(pid,)] = await BACKEND_PID.rows(conn, {})
        else:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        if together is not None:
            await together.wait()  # keep this connection until the others are taken
    return int(pid)


@pytest.mark.parametrize("prepared", [False, True], ids=["sqlalchemy", "prepared"])
async def test_after_the_server_drops_pooled_connections_one_request_fails_then_all_work(
    prepared: bool,
) -> None:
    """The statement that meets a dropped connection fails with an error that counts as the
    database being unreachable (a 503 `not_ready`, never a 500); that failure discards every
    connection the pool opened before it, so the requests after it work. The same whether
    SQLAlchemy ran the statement or a prepared one ran on asyncpg."""
    async with fresh_postgres_database() as url:
        db = Database(url)
        admin = create_async_engine(url)
        try:
            together = asyncio.Barrier(4)
            pids = await asyncio.gather(*(_backend_pid(db, together) for _ in range(4)))
            assert len(set(pids)) == 4  # four pooled connections
            async with admin.begin() as conn:
                for pid in pids:
                    await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})

            through_sqlalchemy: list[str] = []
            event.listen(
                db._writer.sync_engine,
                "before_cursor_execute",
                lambda _c, _cur, statement, *_: through_sqlalchemy.append(statement),
            )
            with pytest.raises(DBAPIError) as failed:
                await _backend_pid(db, prepared=prepared)
            # A prepared statement met the dropped connection on asyncpg itself.
            assert bool(through_sqlalchemy) is not prepared
            assert unreachable(failed.value)
            after = await asyncio.gather(*(_backend_pid(db) for _ in range(4)))
            async with db.write() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await admin.dispose()
            await db.dispose()
    assert not set(after) & set(pids)  # new connections


async def test_writes_run_read_committed_whatever_the_servers_default() -> None:
    """The Idempotency-Key's lock and the claim's SKIP LOCKED rely on each statement seeing
    what is committed when it starts: a database set to REPEATABLE READ must not change that,
    on SQLAlchemy's path or the prepared one (which begins the transaction itself)."""
    isolation = Prepared(select(func.current_setting("transaction_isolation")))
    async with fresh_postgres_database() as url:
        admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as conn:
                name = make_url(url).database
                await conn.execute(
                    text(
                        f'ALTER DATABASE "{name}" SET default_transaction_isolation TO '
                        "'repeatable read'"
                    )
                )
                default = create_async_engine(url)
                async with default.connect() as plain:
                    server_default = (
                        await plain.execute(text("SHOW transaction_isolation"))
                    ).scalar_one()
                await default.dispose()
        finally:
            await admin.dispose()
        db = Database(url)
        try:
            async with db.write() as conn:
                [(prepared_first,)] = await isolation.rows(conn, {})
            async with db.write() as conn:
                sqlalchemy_first = (
                    await conn.execute(text("SHOW transaction_isolation"))
                ).scalar_one()
        finally:
            await db.dispose()
    assert server_default == "repeatable read"
    assert prepared_first == sqlalchemy_first == "read committed"
