"""Clients, API keys and senders."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.tables import api_keys as _keys
from adapters.db.tables import clients as _clients
from adapters.db.tables import senders as _senders
from domain.model import ApiKey, Scope, Sender


def _split(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]


def _api_key(row: Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    senders = m["senders"]
    return ApiKey(
        id=m["id"],
        client_id=m["client_id"],
        client_name=m["client_name"],
        scopes=frozenset(Scope(s) for s in _split(m["scopes"])),
        senders=None if senders is None else frozenset(_split(senders)),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


def _sender(row: Row[tuple[object, ...]]) -> Sender:
    m = row._mapping
    return Sender(
        phone_number_id=m["phone_number_id"],
        waba_id=m["waba_id"],
        display_number=m["display_number"],
        name=m["name"],
        max_mps=m["max_mps"],
        paused_until=m["paused_until"],
        pause_reason=m["pause_reason"],
    )


_KEY_COLUMNS = (*_keys.c, _clients.c.name.label("client_name"))


async def client_id_for(conn: AsyncConnection, name: str, *, new_id: str, now: datetime) -> str:
    """The id of the client called ``name``, created on first use."""
    found = await conn.scalar(select(_clients.c.id).where(_clients.c.name == name))
    if found is not None:
        return str(found)
    await conn.execute(_clients.insert().values(id=new_id, name=name, created_at=now))
    return new_id


async def insert_key(
    conn: AsyncConnection,
    *,
    key_id: str,
    client_id: str,
    secret_sha256: str,
    scopes: Sequence[Scope],
    senders: Sequence[str] | None,
    now: datetime,
) -> None:
    await conn.execute(
        _keys.insert().values(
            id=key_id,
            client_id=client_id,
            secret_sha256=secret_sha256,
            scopes=",".join(sorted(scopes)),
            senders=None if senders is None else ",".join(senders),
            created_at=now,
        )
    )


async def key_by_hash(conn: AsyncConnection, secret_sha256: str) -> ApiKey | None:
    row = (
        await conn.execute(
            select(*_KEY_COLUMNS)
            .join(_clients, _clients.c.id == _keys.c.client_id)
            .where(_keys.c.secret_sha256 == secret_sha256)
        )
    ).first()
    return None if row is None else _api_key(row)


async def list_keys(conn: AsyncConnection) -> list[ApiKey]:
    rows = await conn.execute(
        select(*_KEY_COLUMNS)
        .join(_clients, _clients.c.id == _keys.c.client_id)
        .order_by(_keys.c.created_at, _keys.c.id)
    )
    return [_api_key(row) for row in rows]


async def revoke_key(conn: AsyncConnection, key_id: str, *, now: datetime) -> bool:
    """True if the key exists (revoking twice keeps the first revocation time)."""
    exists = await conn.scalar(select(_keys.c.id).where(_keys.c.id == key_id))
    if exists is None:
        return False
    await conn.execute(
        update(_keys)
        .where(_keys.c.id == key_id, _keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return True


async def touch_key(conn: AsyncConnection, key_id: str, *, now: datetime) -> None:
    await conn.execute(update(_keys).where(_keys.c.id == key_id).values(last_used_at=now))


async def upsert_sender(
    conn: AsyncConnection, sender: Sender, *, now: datetime, only: Collection[str] | None = None
) -> bool:
    """Register or update a sender; True if it was new. ``only`` limits an update to the named
    fields (the others keep their stored values)."""
    values = {
        "waba_id": sender.waba_id,
        "display_number": sender.display_number,
        "name": sender.name,
        "max_mps": sender.max_mps,
    }
    existing = await conn.scalar(
        select(_senders.c.phone_number_id).where(
            _senders.c.phone_number_id == sender.phone_number_id
        )
    )
    if existing is None:
        await conn.execute(
            _senders.insert().values(
                phone_number_id=sender.phone_number_id, created_at=now, **values
            )
        )
        return True
    if only is not None:
        values = {name: value for name, value in values.items() if name in only}
    if values:
        await conn.execute(
            update(_senders)
            .where(_senders.c.phone_number_id == sender.phone_number_id)
            .values(**values)
        )
    return False


async def get_sender(conn: AsyncConnection, phone_number_id: str) -> Sender | None:
    row = (
        await conn.execute(select(_senders).where(_senders.c.phone_number_id == phone_number_id))
    ).first()
    return None if row is None else _sender(row)


async def list_senders(conn: AsyncConnection) -> list[Sender]:
    rows = await conn.execute(select(_senders).order_by(_senders.c.phone_number_id))
    return [_sender(row) for row in rows]


async def resume_sender(conn: AsyncConnection, phone_number_id: str) -> bool:
    """Lift a pause; False if there is no such sender."""
    result = await conn.execute(
        update(_senders)
        .where(_senders.c.phone_number_id == phone_number_id)
        .values(paused_until=None, pause_reason=None)
    )
    return bool(result.rowcount)


async def pause_sender(
    conn: AsyncConnection, phone_number_id: str, *, until: datetime, reason: str
) -> None:
    await conn.execute(
        update(_senders)
        .where(_senders.c.phone_number_id == phone_number_id)
        .values(paused_until=until, pause_reason=reason[:500])
    )
