"""Readiness (``GET /readyz``): the database answers, its schema is at the migrations' head, and
an embedded dispatcher is alive. Paused senders are reported, not failed: the router still
accepts for them and sends once the pause ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from adapters.db import keys as key_repo
from adapters.db.engine import Database, DatabaseError
from adapters.db.migrate import current_revision, head_revision, known_revisions
from app.services.dispatch import HEARTBEAT_EVERY_SECONDS, Dispatcher
from domain.model import Sender

_log = structlog.get_logger("wa_router.readiness")

#: A dispatcher whose heartbeat is older than this is taken for dead: it beats every
#: HEARTBEAT_EVERY_SECONDS, idle or sending.
HEARTBEAT_FRESH_FOR = timedelta(seconds=12 * HEARTBEAT_EVERY_SECONDS)
#: A probe must answer: a database that hangs is as unready as one that refuses.
CHECK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Readiness:
    now: datetime
    database_error: str | None  # None: the database answered
    revision: str | None
    head: str | None
    known: frozenset[str]  # revisions this code ships
    read_only: bool  # PostgreSQL in recovery (a standby after a failover): no write would work
    embedded: bool  # the dispatcher runs in this process
    heartbeat: datetime | None
    paused: tuple[Sender, ...]

    @property
    def database_ok(self) -> bool:
        return self.database_error is None

    @property
    def migrations_ok(self) -> bool:
        """At head, or ahead of this code (a newer release migrated during a rolling deploy:
        the old processes keep serving). Behind head, this code's queries may fail."""
        if not self.database_ok:
            return False
        return self.revision == self.head or (
            self.revision is not None and self.revision not in self.known
        )

    @property
    def writable(self) -> bool:
        return self.database_ok and not self.read_only

    @property
    def heartbeat_age(self) -> timedelta | None:
        return None if self.heartbeat is None else self.now - self.heartbeat

    @property
    def dispatcher_ok(self) -> bool:
        if not self.embedded:
            return True
        age = self.heartbeat_age
        return age is not None and age <= HEARTBEAT_FRESH_FOR

    @property
    def failed(self) -> list[str]:
        checks = {
            "database": self.writable,
            "migrations": self.migrations_ok,
            "dispatcher": self.dispatcher_ok,
        }
        return [name for name, ok in checks.items() if not ok]


class ReadinessProbe:
    def __init__(
        self, db: Database, *, dispatcher: Dispatcher | None, clock: Callable[[], datetime]
    ) -> None:
        self._db = db
        self._dispatcher = dispatcher
        self._clock = clock
        self._head: str | None = None
        self._known: frozenset[str] = frozenset()

    async def check(self) -> Readiness:
        if self._head is None:
            # The migrations shipped with this code: read from disk once.
            self._head = await asyncio.to_thread(head_revision, self._db.url)
            self._known = await asyncio.to_thread(known_revisions, self._db.url)
        now = self._clock()
        error: str | None = None
        revision: str | None = None
        read_only = False
        senders: list[Sender] = []
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await self._db.ping()
                async with self._db.read() as conn:
                    revision = await current_revision(conn)
                    if conn.dialect.name == "postgresql":
                        read_only = bool(await conn.scalar(text("SELECT pg_is_in_recovery()")))
                    if revision == self._head:  # else the senders table may not be there yet
                        senders = await key_repo.list_senders(conn)
        except TimeoutError:
            error = f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
        except (DatabaseError, SQLAlchemyError, OSError) as exc:
            # The probe is unauthenticated: the cause goes to the log, not into the answer.
            _log.warning("readiness_database_failed", error=repr(exc))
            error = "unreachable or failing"
        return Readiness(
            now=now,
            database_error=error,
            revision=revision,
            head=self._head,
            known=self._known,
            read_only=read_only,
            embedded=self._dispatcher is not None,
            heartbeat=self._dispatcher.heartbeat if self._dispatcher else None,
            paused=tuple(s for s in senders if s.paused_until and s.paused_until > now),
        )
