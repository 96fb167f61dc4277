"""Per-client budgets on the send and read routes, and a per-address budget of failed
authentications (so keys cannot be guessed at speed)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from adapters.db import ratelimits as repo
from adapters.db.engine import Database
from app.settings import Settings
from domain.ratelimit import NS, Quota, Verdict, gcra, per_hour, per_minute, tightest

AUTH_FAILURES_PER_MINUTE = 30
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    send: tuple[Quota, ...]
    read: tuple[Quota, ...]
    auth_failures: Quota

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        send = [per_minute("send", settings.send_rate_per_minute)]
        if settings.send_rate_per_hour:
            send.append(per_hour("send_hour", settings.send_rate_per_hour))
        return cls(
            send=tuple(q for q in send if q.limit > 0),
            read=tuple(
                q for q in [per_minute("read", settings.read_rate_per_minute)] if q.limit > 0
            ),
            auth_failures=per_minute("auth_failures", AUTH_FAILURES_PER_MINUTE),
        )


def headers(verdict: Verdict, quotas: tuple[Quota, ...], now: datetime) -> dict[str, str]:
    """X-RateLimit-* and the IETF draft's RateLimit-Policy / RateLimit fields."""
    reset_seconds = math.ceil(verdict.reset_after_ns / NS)
    out = {
        "X-RateLimit-Limit": str(verdict.quota.limit),
        "X-RateLimit-Remaining": str(verdict.remaining),
        "X-RateLimit-Reset": str(math.ceil(now.timestamp()) + reset_seconds),
        "RateLimit-Policy": ", ".join(
            f'"{q.name}";q={q.limit};w={q.period_seconds}' for q in quotas
        ),
        "RateLimit": f'"{verdict.quota.name}";r={verdict.remaining};t={reset_seconds}',
    }
    if not verdict.allowed:
        out["Retry-After"] = str(max(1, math.ceil(verdict.retry_after_ns / NS)))
    return out


class GcraStore(Protocol):
    """Where the theoretical arrival times live."""

    async def spend(
        self, subject: str, quotas: tuple[Quota, ...], *, now_ns: int
    ) -> list[Verdict]: ...

    async def look(self, subject: str, quota: Quota, *, now_ns: int) -> Verdict: ...

    async def sweep(self, *, now_ns: int) -> int: ...


class DatabaseStore:
    """PostgreSQL: shared by every API process, so a budget holds across replicas.

    The process decides its requests in rounds: the requests that arrive while a round's
    transaction runs wait for the next one, which decides them all in arrival order. Budgets
    are hot rows (every request of a client spends the same one), so a transaction per
    request would queue each behind the last one's lock; a round takes the locks once for as
    many requests as are waiting."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: list[tuple[repo.Ask, asyncio.Future[list[Verdict]]]] = []
        self._rounds: asyncio.Task[None] | None = None

    async def spend(self, subject: str, quotas: tuple[Quota, ...], *, now_ns: int) -> list[Verdict]:
        return await self._decide(repo.Ask(subject, quotas, now_ns, spend=True))

    async def look(self, subject: str, quota: Quota, *, now_ns: int) -> Verdict:
        [verdict] = await self._decide(repo.Ask(subject, (quota,), now_ns, spend=False))
        return verdict

    async def sweep(self, *, now_ns: int) -> int:
        async with self._db.write() as conn:
            return await repo.sweep(conn, now_ns=now_ns)

    async def _decide(self, ask: repo.Ask) -> list[Verdict]:
        loop = asyncio.get_running_loop()
        if self._rounds is not None and self._rounds.get_loop() is not loop:
            self._rounds, self._waiting = None, []  # a new loop (tests): the old one's are gone
        decided: asyncio.Future[list[Verdict]] = loop.create_future()
        self._waiting.append((ask, decided))
        if self._rounds is None or self._rounds.done():
            self._rounds = loop.create_task(self._run_rounds())
        return await decided

    async def _run_rounds(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            asks = [ask for ask, _ in batch]
            try:  # a round of looks alone only reads
                session = self._db.write() if any(a.spend for a in asks) else self._db.read()
                async with session as conn:
                    verdicts = await repo.decide(conn, asks)
            except Exception as exc:  # noqa: BLE001 - handed to each request of the round
                for _, decided in batch:
                    if not decided.done():
                        decided.set_exception(exc)
                continue
            except BaseException:  # the loop is stopping: nobody waits in vain
                for _, decided in batch + self._waiting:
                    decided.cancel()
                raise
            for (_, decided), answer in zip(batch, verdicts, strict=True):
                if not decided.done():
                    decided.set_result(answer)


class MemoryStore:
    """SQLite: one box, one HTTP process (the only kind of deployment SQLite supports), so the
    state lives in memory and a request does not pay a durable write for its budget. Nothing
    awaits between reading and writing a budget, so concurrent requests cannot overspend."""

    def __init__(self) -> None:
        self._tats: dict[tuple[str, str], int] = {}

    async def spend(self, subject: str, quotas: tuple[Quota, ...], *, now_ns: int) -> list[Verdict]:
        verdicts = [gcra(self._tats.get((subject, q.name)), now_ns, q) for q in quotas]
        if all(v.allowed for v in verdicts):
            for verdict in verdicts:
                self._tats[(subject, verdict.quota.name)] = verdict.tat_ns
        return verdicts

    async def look(self, subject: str, quota: Quota, *, now_ns: int) -> Verdict:
        return gcra(self._tats.get((subject, quota.name)), now_ns, quota)

    async def sweep(self, *, now_ns: int) -> int:
        stale = [key for key, tat in self._tats.items() if tat < now_ns]
        for key in stale:
            del self._tats[key]
        return len(stale)


def store_for(db: Database) -> GcraStore:
    return MemoryStore() if db.is_sqlite else DatabaseStore(db)


class RateLimiter:
    def __init__(self, store: GcraStore, limits: Limits, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self.limits = limits
        self._clock = clock

    def _now_ns(self) -> tuple[datetime, int]:
        now = self._clock()
        return now, (now - EPOCH) // timedelta(microseconds=1) * 1000

    async def spend(
        self, subject: str, quotas: tuple[Quota, ...]
    ) -> tuple[Verdict, dict[str, str]]:
        now, now_ns = self._now_ns()
        verdict = tightest(await self._store.spend(subject, quotas, now_ns=now_ns))
        return verdict, headers(verdict, quotas, now)

    async def auth_blocked(self, address: str) -> dict[str, str] | None:
        """Headers of a 429 if this address has failed authentication too often."""
        now, now_ns = self._now_ns()
        quota = self.limits.auth_failures
        verdict = await self._store.look("ip:" + address, quota, now_ns=now_ns)
        return None if verdict.allowed else headers(verdict, (quota,), now)

    async def auth_failed(self, address: str) -> dict[str, str] | None:
        """Count a failed authentication; headers of a 429 once the address is over budget
        (concurrent guesses are decided by this atomic spend, not by the earlier look)."""
        now, now_ns = self._now_ns()
        quota = self.limits.auth_failures
        [verdict] = await self._store.spend("ip:" + address, (quota,), now_ns=now_ns)
        return None if verdict.allowed else headers(verdict, (quota,), now)

    async def sweep(self) -> int:
        """Forget budgets that are whole again (a past arrival time is the same as none)."""
        _, now_ns = self._now_ns()
        return await self._store.sweep(now_ns=now_ns)
