"""Per-client budgets on the send and read routes, and a per-address budget of failed
authentications (so keys cannot be guessed at speed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from adapters.db import ratelimits as repo
from adapters.db.engine import Database
from app.settings import Settings
from domain.ratelimit import NS, Quota, Verdict, per_hour, per_minute, tightest

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


class RateLimiter:
    def __init__(self, db: Database, limits: Limits, *, clock: Callable[[], datetime]) -> None:
        self._db = db
        self.limits = limits
        self._clock = clock

    def _now_ns(self) -> tuple[datetime, int]:
        now = self._clock()
        return now, (now - EPOCH) // timedelta(microseconds=1) * 1000

    async def spend(
        self, subject: str, quotas: tuple[Quota, ...]
    ) -> tuple[Verdict, dict[str, str]]:
        now, now_ns = self._now_ns()
        async with self._db.write() as conn:
            verdicts = await repo.spend(conn, subject, quotas, now_ns=now_ns)
        verdict = tightest(verdicts)
        return verdict, headers(verdict, quotas, now)

    async def auth_blocked(self, address: str) -> dict[str, str] | None:
        """Headers of a 429 if this address has failed authentication too often."""
        now, now_ns = self._now_ns()
        quota = self.limits.auth_failures
        async with self._db.read() as conn:
            verdict = await repo.look(conn, "ip:" + address, quota, now_ns=now_ns)
        return None if verdict.allowed else headers(verdict, (quota,), now)

    async def auth_failed(self, address: str) -> None:
        _, now_ns = self._now_ns()
        async with self._db.write() as conn:
            await repo.spend(conn, "ip:" + address, (self.limits.auth_failures,), now_ns=now_ns)
