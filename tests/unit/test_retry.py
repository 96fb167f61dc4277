"""Retry timing: capped exponential backoff with full jitter, bounded by attempts and age."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.retry import RetryPolicy

MICROSECOND = timedelta(microseconds=1)
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
rands = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def ceiling_us(policy: RetryPolicy, attempts: int) -> int:
    """min(cap, base * 2**(attempts-1)) in microseconds, computed in unbounded integers."""
    cap_us, base_us = policy.cap // MICROSECOND, policy.base // MICROSECOND
    exponent = max(attempts - 1, 0)
    if base_us >= 1 and exponent > cap_us.bit_length():
        return cap_us  # base * 2**exponent > 2**bit_length > cap: no need to build a huge int
    return min(cap_us, base_us * 2**exponent)


@settings(max_examples=300)
@given(attempts=st.integers(min_value=1, max_value=200), rand=rands)
def test_delay_is_full_jitter_below_the_capped_exponential(attempts: int, rand: float) -> None:
    policy = RetryPolicy()
    delay = policy.delay(attempts, rand)
    assert timedelta(0) <= delay
    assert delay // MICROSECOND <= ceiling_us(policy, attempts)


@settings(deadline=None)
@given(
    base=st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(hours=1)),
    cap=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=1)),
    attempts=st.integers(min_value=1, max_value=10**9),
    rand=rands,
)
def test_delay_bound_holds_for_other_policies_and_huge_attempt_counts(
    base: timedelta, cap: timedelta, attempts: int, rand: float
) -> None:
    policy = RetryPolicy(base=base, cap=cap)
    delay = policy.delay(attempts, rand)
    assert timedelta(0) <= delay
    assert delay // MICROSECOND <= ceiling_us(policy, attempts)


@pytest.mark.parametrize("attempts", [31, 32, 64, 1_000, 10**6, sys.maxsize, 10**30])
def test_huge_attempt_counts_do_not_overflow_and_stay_under_the_cap(attempts: int) -> None:
    policy = RetryPolicy()
    assert policy.delay(attempts, 0.999999) <= policy.cap
    assert policy.delay(attempts, 0.5) == policy.cap / 2


@pytest.mark.parametrize(
    ("attempts", "half_ceiling"),
    [
        (1, timedelta(seconds=1)),
        (2, timedelta(seconds=2)),
        (3, timedelta(seconds=4)),
        (4, timedelta(seconds=8)),
        (8, timedelta(seconds=128)),
        (9, timedelta(seconds=150)),  # 2s * 2**8 = 512s, capped at 5 min
        (12, timedelta(seconds=150)),
    ],
)
def test_the_ceiling_doubles_per_attempt_up_to_the_cap(
    attempts: int, half_ceiling: timedelta
) -> None:
    assert RetryPolicy().delay(attempts, 0.5) == half_ceiling


def test_jitter_spans_from_zero_to_the_ceiling() -> None:
    policy = RetryPolicy()
    assert policy.delay(3, 0.0) == timedelta(0)
    assert policy.delay(3, 0.25) == timedelta(seconds=2)
    assert timedelta(seconds=7.99) < policy.delay(3, 0.999999) <= timedelta(seconds=8)


@pytest.mark.parametrize(
    ("attempts", "gives_up"), [(0, False), (1, False), (11, False), (12, True), (13, True)]
)
def test_gives_up_after_max_attempts(attempts: int, gives_up: bool) -> None:
    assert RetryPolicy().gives_up(attempts=attempts, created_at=T0, now=T0) is gives_up


@pytest.mark.parametrize(
    ("age", "gives_up"),
    [
        (timedelta(0), False),
        (timedelta(hours=6) - MICROSECOND, False),
        (timedelta(hours=6), True),
        (timedelta(days=2), True),
    ],
)
def test_gives_up_when_the_message_is_too_old(age: timedelta, gives_up: bool) -> None:
    assert RetryPolicy().gives_up(attempts=1, created_at=T0, now=T0 + age) is gives_up


def test_gives_up_with_a_policy_of_its_own() -> None:
    policy = RetryPolicy(max_attempts=3, max_age=timedelta(minutes=10))
    assert not policy.gives_up(attempts=2, created_at=T0, now=T0 + timedelta(minutes=9))
    assert policy.gives_up(attempts=3, created_at=T0, now=T0)
    assert policy.gives_up(attempts=0, created_at=T0, now=T0 + timedelta(minutes=10))
