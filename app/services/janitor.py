"""Periodic housekeeping: expired idempotency keys, long-parked statuses and rate-limit
budgets that are whole again are swept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.exc import SQLAlchemyError

from adapters.db import contacts as contact_repo
from adapters.db import idempotency as idempotency_repo
from adapters.db.engine import Database
from app.services.ratelimit import RateLimiter

_log = structlog.get_logger("wa_router.janitor")
#: Meta retries a webhook for up to 7 days; a status parked longer will find no message.
PARKED_FOR = timedelta(days=8)


class Janitor:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime],
        every_seconds: float = 300.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._db = db
        self._limiter = limiter
        self._clock = clock
        self._every = every_seconds
        self._stopping = asyncio.Event()

    async def run_once(self) -> int:
        now = self._clock()
        async with self._db.write() as conn:
            keys = await idempotency_repo.sweep(conn, now=now)
            parked = await contact_repo.sweep_parked(conn, received_before=now - PARKED_FOR)
        budgets = await self._limiter.sweep() if self._limiter is not None else 0
        if keys or parked or budgets:
            _log.info(
                "swept", idempotency_keys=keys, parked_statuses=parked, rate_limit_budgets=budgets
            )
        return keys + parked + budgets

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except (SQLAlchemyError, OSError) as exc:
                _log.warning("janitor_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._every)

    def stop(self) -> None:
        self._stopping.set()
