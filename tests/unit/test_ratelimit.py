"""GCRA: the exact budget, whole-period bursts, even refill — in integer nanoseconds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ratelimit import NS, Quota, gcra, per_hour, per_minute, tightest


def spend(quota: Quota, times: list[int]) -> list[bool]:
    tat: int | None = None
    allowed = []
    for now in times:
        verdict = gcra(tat, now, quota)
        tat = verdict.tat_ns
        allowed.append(verdict.allowed)
    return allowed


@given(limit=st.integers(min_value=1, max_value=5000))
def test_a_whole_periods_budget_can_be_spent_at_once_and_not_one_more(limit: int) -> None:
    quota = per_minute("send", limit)
    now = 1_700_000_000 * NS

    assert spend(quota, [now] * (limit + 1)) == [True] * limit + [False]


@given(limit=st.integers(min_value=1, max_value=5000), k=st.integers(min_value=0, max_value=50))
def test_remaining_counts_down_to_zero(limit: int, k: int) -> None:
    quota = per_minute("send", limit)
    tat = None
    for spent in range(min(k, limit)):
        verdict = gcra(tat, 0, quota)
        assert verdict.remaining == limit - spent - 1
        tat = verdict.tat_ns


@given(limit=st.integers(min_value=1, max_value=2000))
def test_after_a_burst_one_request_returns_per_interval(limit: int) -> None:
    quota = per_minute("send", limit)
    tat = None
    for _ in range(limit):
        tat = gcra(tat, 0, quota).tat_ns
    refused = gcra(tat, 0, quota)
    assert not refused.allowed
    # One interval, less what flooring the interval to whole nanoseconds left over.
    assert quota.interval_ns - limit <= refused.retry_after_ns <= quota.interval_ns

    just_before = gcra(tat, refused.retry_after_ns - 1, quota)
    at_retry = gcra(tat, refused.retry_after_ns, quota)
    assert not just_before.allowed
    assert at_retry.allowed
    assert at_retry.remaining == 0


@settings(max_examples=200)
@given(
    limit=st.integers(min_value=1, max_value=120),
    gaps=st.lists(st.integers(min_value=0, max_value=3 * NS), min_size=1, max_size=400),
    window=st.integers(min_value=1, max_value=120 * NS),
)
def test_no_window_ever_admits_more_than_the_burst_plus_the_refill(
    limit: int, gaps: list[int], window: int
) -> None:
    quota = per_minute("send", limit)
    times = []
    now = 0
    for gap in gaps:
        now += gap
        times.append(now)
    admitted = [t for t, ok in zip(times, spend(quota, times), strict=True) if ok]

    for i, start in enumerate(admitted):
        inside = sum(1 for t in admitted[i:] if t < start + window)
        assert inside <= limit + window // quota.interval_ns + 1


def test_a_refusal_does_not_spend() -> None:
    quota = per_minute("send", 1)
    first = gcra(None, 0, quota)
    refused = gcra(first.tat_ns, 0, quota)
    assert refused.tat_ns == first.tat_ns


def test_the_tightest_verdict_is_the_one_a_client_hears() -> None:
    minute, hour = per_minute("send", 60), per_hour("send_hour", 2)
    tat_hour = gcra(gcra(None, 0, hour).tat_ns, 0, hour).tat_ns

    verdicts = [gcra(None, 0, minute), gcra(tat_hour, 0, hour)]

    chosen = tightest(verdicts)
    assert chosen.quota == hour
    assert not chosen.allowed
    assert tightest([gcra(None, 0, minute), gcra(None, 0, hour)]).quota == hour
