"""Periodic housekeeping: expired idempotency keys are swept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError

from adapters.db import idempotency as idempotency_repo
from adapters.db.engine import Database

_log = structlog.get_logger("wa_router.janitor")


class Janitor:
    def __init__(
        self, db: Database, *, clock: Callable[[], datetime], every_seconds: float = 300.0
    ) -> None:
        self._db = db
        self._clock = clock
        self._every = every_seconds
        self._stopping = asyncio.Event()

    async def run_once(self) -> int:
        async with self._db.write() as conn:
            swept = await idempotency_repo.sweep(conn, now=self._clock())
        if swept:
            _log.info("idempotency_keys_swept", count=swept)
        return swept

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
