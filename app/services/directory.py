"""The registered senders, cached briefly, and the rule that picks the sender of a request."""

from __future__ import annotations

import time
from collections.abc import Callable

from adapters.db import keys as key_repo
from adapters.db.engine import Database
from app.errors import ApiError
from domain.model import ApiKey, Sender

SENDER_CACHE_TTL_SECONDS = 5.0


class SenderDirectory:
    def __init__(
        self,
        db: Database,
        *,
        ttl: float = SENDER_CACHE_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = ttl
        self._monotonic = monotonic
        self._senders: dict[str, Sender] = {}
        self._expires = 0.0

    async def all(self) -> dict[str, Sender]:
        if self._monotonic() >= self._expires:
            async with self._db.read() as conn:
                senders = await key_repo.list_senders(conn)
            self._senders = {s.phone_number_id: s for s in senders}
            self._expires = self._monotonic() + self._ttl
        return self._senders

    def forget(self) -> None:
        self._expires = 0.0

    async def resolve(self, key: ApiKey, requested: str | None) -> str:
        """The sender of a send request: the one named (allowed to this key and registered), or
        the only one the key allows, or the only one registered."""
        senders = await self.all()
        if requested is not None:
            if not key.allows_sender(requested):
                raise ApiError(
                    403,
                    "sender_not_authorized",
                    "this API key may not send from that sender",
                    param="sender_id",
                )
            if requested not in senders:
                self.forget()
                senders = await self.all()
                if requested not in senders:
                    raise ApiError(
                        422,
                        "unknown_sender",
                        "no sender with that phone_number_id is registered (wa-router senders add)",
                        param="sender_id",
                    )
            return requested
        candidates = sorted(key.senders) if key.senders is not None else sorted(senders)
        if len(candidates) == 1 and candidates[0] in senders:
            return candidates[0]
        raise ApiError(
            422,
            "unknown_sender",
            f"sender_id is required: this key can send from {len(candidates)} senders",
            param="sender_id",
        )
