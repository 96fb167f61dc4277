"""Retry timing: exponential backoff with full jitter, capped, bounded by a maximum age."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    base: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(minutes=5)
    max_attempts: int = 12
    max_age: timedelta = timedelta(hours=6)
    #: After an attempt that may have reached Meta (a timeout once the request was sent), wait
    #: this long for a status webhook carrying our id before sending again.
    reconcile_after: timedelta = timedelta(minutes=2)

    def delay(self, attempts: int, rand: float) -> timedelta:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempts-1))]; ``rand`` in [0, 1)."""
        exponent: int = min(max(attempts - 1, 0), 30)
        try:
            ceiling: timedelta = min(self.cap, self.base * (1 << exponent))
        except OverflowError:
            ceiling = self.cap
        return ceiling * rand

    def gives_up(self, *, attempts: int, created_at: datetime, now: datetime) -> bool:
        return attempts >= self.max_attempts or now - created_at >= self.max_age
