"""API keys: created with a secret shown once, stored as SHA-256, looked up through a short-TTL
cache (so a revocation bites within seconds)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.db import keys as key_repo
from adapters.db.engine import Database
from app import ids
from domain.model import ApiKey, Scope

KEY_CACHE_TTL_SECONDS = 5.0
TOUCH_EVERY = timedelta(minutes=1)
MAX_KEY_LENGTH = 200


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedKey:
    key: ApiKey
    secret: str


async def create_key(
    db: Database,
    *,
    client: str,
    scopes: Sequence[Scope],
    senders: Sequence[str] | None,
    now: datetime,
    secret: str | None = None,
) -> CreatedKey:
    secret = secret or ids.api_key_secret()
    key_id = ids.key_id()
    async with db.write() as conn:
        client_id = await key_repo.client_id_for(conn, client, new_id=ids.client_id(), now=now)
        await key_repo.insert_key(
            conn,
            key_id=key_id,
            client_id=client_id,
            secret_sha256=secret_hash(secret),
            scopes=scopes,
            senders=senders,
            now=now,
        )
    key = ApiKey(
        id=key_id,
        client_id=client_id,
        client_name=client,
        scopes=frozenset(scopes),
        senders=None if senders is None else frozenset(senders),
        created_at=now,
    )
    return CreatedKey(key=key, secret=secret)


class KeyCache:
    """Authenticates secrets. The lookup is by SHA-256 digest through a unique index, so the
    time it takes does not depend on how much of a guessed secret is right."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime],
        ttl: float = KEY_CACHE_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._clock = clock
        self._ttl = ttl
        self._monotonic = monotonic
        self._entries: dict[str, tuple[ApiKey | None, float]] = {}

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The key for ``secret`` if it exists and is not revoked, else None."""
        if not secret or len(secret) > MAX_KEY_LENGTH:
            return None
        digest = secret_hash(secret)
        now = self._monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            key = cached[0]
        else:
            async with self._db.read() as conn:
                key = await key_repo.key_by_hash(conn, digest)
            if key is not None:
                if len(self._entries) > 10_000:
                    self._entries.clear()
                self._entries[digest] = (key, now + self._ttl)
                await self._touch(key)
        if key is None or key.revoked_at is not None:
            return None
        return key

    async def _touch(self, key: ApiKey) -> None:
        wall = self._clock()
        if key.last_used_at is None or wall - key.last_used_at >= TOUCH_EVERY:
            async with self._db.write() as conn:
                await key_repo.touch_key(conn, key.id, now=wall)
