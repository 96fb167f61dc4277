"""Stored outcomes of requests sent with an Idempotency-Key (2xx only), kept 24 hours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.prepared import Prepared
from adapters.db.tables import idempotency_keys as keys


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredResponse:
    fingerprint: str
    message_id: str
    status: int
    body: str


# Prepared once, as the other hot paths' statements (see adapters/db/prepared.py).
_TRY_LOCK = Prepared(
    select(func.pg_try_advisory_xact_lock(func.hashtextextended(bindparam("lock_key"), 0)))
)


async def try_lock(conn: AsyncConnection, client_id: str, key: str) -> bool:
    """PostgreSQL: take a transaction-scoped advisory lock on (client, key), without waiting;
    False means another replica is processing the same key right now. SQLite has one writer
    (the caller serialises in-process), so the answer there is always True."""
    if conn.dialect.name != "postgresql":
        return True
    row = await _TRY_LOCK.first(conn, {"lock_key": client_id + "\x1f" + key})
    return row is not None and bool(row[0])


_FIND = Prepared(
    select(
        keys.c.fingerprint, keys.c.message_id, keys.c.response_status, keys.c.response_body
    ).where(
        keys.c.client_id == bindparam("client_id"),
        keys.c.key == bindparam("key"),
        keys.c.expires_at > bindparam("now"),
    )
)
_DELETE = Prepared(
    delete(keys).where(keys.c.client_id == bindparam("client_id"), keys.c.key == bindparam("key"))
)
_INSERT = Prepared(
    keys.insert(),
    columns=[
        "client_id",
        "key",
        "fingerprint",
        "message_id",
        "response_status",
        "response_body",
        "created_at",
        "expires_at",
    ],
)


async def find(
    conn: AsyncConnection, client_id: str, key: str, *, now: datetime
) -> StoredResponse | None:
    row = await _FIND.first(conn, {"client_id": client_id, "key": key, "now": now})
    if row is None:
        return None
    fingerprint, message_id, status, body = row
    return StoredResponse(fingerprint=fingerprint, message_id=message_id, status=status, body=body)


async def store(
    conn: AsyncConnection,
    *,
    client_id: str,
    key: str,
    response: StoredResponse,
    now: datetime,
    expires_at: datetime,
) -> None:
    # An expired record of the same key may still be there (the sweep runs periodically).
    await _DELETE.run(conn, {"client_id": client_id, "key": key})
    await _INSERT.run(
        conn,
        {
            "client_id": client_id,
            "key": key,
            "fingerprint": response.fingerprint,
            "message_id": response.message_id,
            "response_status": response.status,
            "response_body": response.body,
            "created_at": now,
            "expires_at": expires_at,
        },
    )


async def sweep(conn: AsyncConnection, *, now: datetime) -> int:
    result = await conn.execute(delete(keys).where(keys.c.expires_at <= now))
    return int(result.rowcount or 0)
