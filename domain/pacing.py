"""Pacing at Meta's limits (cloud-api.md §6), as pure functions of times in seconds.

- Per sender: at most ``max_mps`` messages in any 1-second window (Meta counts per second; a
  token bucket would let a full bucket plus its refill through in one second, so this is a
  sliding window over the last sends).
- Per (sender, contact) pair: about one message per 6 s sustained, with bursts that borrow
  future quota (45 in 6 s at most): GCRA with that interval and burst. 131056 backs the pair
  off 4^X s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

SENDER_WINDOW_SECONDS = 1.0


def next_send_time(
    recent: Sequence[float], now: float, limit: int, window: float = SENDER_WINDOW_SECONDS
) -> float:
    """When the next send may start, given the start times of recent sends (oldest first):
    ``now`` if fewer than ``limit`` sends fall in the window ending now, else the moment the
    oldest of the last ``limit`` leaves the window."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    if len(recent) < limit:
        return now
    return max(now, recent[-limit] + window)


@dataclass(frozen=True, slots=True, kw_only=True)
class PairPacing:
    interval: timedelta = timedelta(seconds=6)
    burst: int = 45

    @property
    def period(self) -> timedelta:
        return self.interval * self.burst


def after_pair_send(next_send_at: datetime | None, now: datetime, pacing: PairPacing) -> datetime:
    """The pair's next allowed send time once one message went out at ``now``.

    GCRA state is the theoretical arrival time ``tat``; we store ``next_send_at``, the earliest
    moment the next message fits, which is ``tat + interval - period``."""
    shift = pacing.period - pacing.interval
    tat = now if next_send_at is None else max(now, next_send_at + shift)
    return tat + pacing.interval - shift


def pair_backoff(strikes: int) -> timedelta:
    """Meta's advice after 131056: wait 4^X seconds, X = 0, 1, 2 … (capped at about 4.5 h)."""
    return timedelta(seconds=4 ** min(max(strikes, 0), 7))
