"""GCRA (the generic cell rate algorithm): a budget that refills evenly, of which a client may
spend a whole period's worth at once. Times are integer nanoseconds, so no rounding ever lets
a request through that the budget does not allow."""

from __future__ import annotations

from dataclasses import dataclass

NS = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Quota:
    name: str
    limit: int  # requests per period
    period_ns: int

    @property
    def interval_ns(self) -> int:
        """Emission interval: one request's share of the period."""
        return self.period_ns // self.limit

    @property
    def period_seconds(self) -> int:
        return self.period_ns // NS


def per_minute(name: str, limit: int) -> Quota:
    return Quota(name=name, limit=limit, period_ns=60 * NS)


def per_hour(name: str, limit: int) -> Quota:
    return Quota(name=name, limit=limit, period_ns=3600 * NS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    quota: Quota
    allowed: bool
    tat_ns: int  # the state to store (unchanged when refused)
    remaining: int
    retry_after_ns: int  # 0 when allowed
    reset_after_ns: int  # until the budget is whole again


def gcra(tat_ns: int | None, now_ns: int, quota: Quota) -> Verdict:
    """Decide one request against ``quota`` given the stored theoretical arrival time."""
    interval = quota.interval_ns
    tat = now_ns if tat_ns is None or tat_ns < now_ns else tat_ns
    new_tat = tat + interval
    if new_tat - now_ns > quota.period_ns:
        return Verdict(
            quota=quota,
            allowed=False,
            tat_ns=tat,
            remaining=0,
            retry_after_ns=new_tat - quota.period_ns - now_ns,
            reset_after_ns=tat - now_ns,
        )
    return Verdict(
        quota=quota,
        allowed=True,
        tat_ns=new_tat,
        remaining=(quota.period_ns - (new_tat - now_ns)) // interval,
        reset_after_ns=new_tat - now_ns,
        retry_after_ns=0,
    )


def tightest(verdicts: list[Verdict]) -> Verdict:
    """The verdict a client should hear: a refusal if any, else the fewest remaining."""
    refused = [v for v in verdicts if not v.allowed]
    if refused:
        return max(refused, key=lambda v: v.retry_after_ns)
    return min(verdicts, key=lambda v: (v.remaining, -v.reset_after_ns))
