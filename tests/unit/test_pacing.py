"""Pacing maths: the per-sender 1-second window and the per-pair GCRA (cloud-api.md §6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.pacing import PairPacing, after_pair_send, next_send_time, pair_backoff

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@settings(max_examples=200)
@given(
    limit=st.integers(min_value=1, max_value=100),
    arrivals=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=400),
)
def test_sends_started_by_the_rule_never_exceed_the_limit_in_any_second(
    limit: int, arrivals: list[float]
) -> None:
    starts: list[float] = []
    now = 0.0
    for gap in arrivals:  # work keeps arriving; each send starts as soon as the rule allows
        now += gap
        start = next_send_time(starts, now, limit)
        assert start >= now
        starts.append(start)
        now = start

    for i, first in enumerate(starts):
        in_window = [s for s in starts[i:] if s < first + 1.0]
        assert len(in_window) <= limit


@given(limit=st.integers(min_value=1, max_value=1000))
def test_a_full_second_of_sends_may_start_at_once_then_the_window_slides(limit: int) -> None:
    starts = [0.0] * limit
    assert next_send_time(starts[:-1], 0.0, limit) == 0.0
    assert next_send_time(starts, 0.0, limit) == 1.0
    assert next_send_time(starts, 0.4, limit) == 1.0
    assert next_send_time(starts, 2.0, limit) == 2.0


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        next_send_time([], 0.0, 0)


@settings(max_examples=200)
@given(
    burst=st.integers(min_value=1, max_value=45),
    interval=st.integers(min_value=1, max_value=10),
    gaps=st.lists(st.integers(min_value=0, max_value=20_000), min_size=1, max_size=200),
)
def test_a_pair_gets_its_burst_then_one_per_interval(
    burst: int, interval: int, gaps: list[int]
) -> None:
    pacing = PairPacing(interval=timedelta(seconds=interval), burst=burst)
    next_at = None
    now = T0
    sent: list[datetime] = []
    for gap_ms in gaps:
        now += timedelta(milliseconds=gap_ms)
        if next_at is not None and now < next_at:
            now = next_at  # the message waits for its turn
        sent.append(now)
        next_at = after_pair_send(next_at, now, pacing)

    for i, first in enumerate(sent):
        for last in sent[i:]:
            span = last - first
            count = sum(1 for s in sent[i:] if s <= last)
            assert count <= burst + span // pacing.interval


def test_metas_numbers_allow_45_at_once_then_one_every_6_seconds() -> None:
    pacing = PairPacing()
    next_at = None
    for _ in range(45):
        assert next_at is None or next_at <= T0
        next_at = after_pair_send(next_at, T0, pacing)
    assert next_at == T0 + timedelta(seconds=6)
    next_at = after_pair_send(next_at, next_at, pacing)
    assert next_at == T0 + timedelta(seconds=12)


def test_after_a_quiet_spell_the_burst_is_whole_again() -> None:
    pacing = PairPacing(interval=timedelta(seconds=6), burst=3)
    next_at = None
    for _ in range(3):
        next_at = after_pair_send(next_at, T0, pacing)
    later = T0 + timedelta(seconds=18)
    for _ in range(3):
        assert next_at is not None
        assert next_at <= later
        next_at = after_pair_send(next_at, later, pacing)


@pytest.mark.parametrize(
    ("strikes", "seconds"), [(0, 1), (1, 4), (2, 16), (3, 64), (7, 16384), (50, 16384), (-1, 1)]
)
def test_131056_backs_off_4_to_the_x_seconds(strikes: int, seconds: int) -> None:
    assert pair_backoff(strikes) == timedelta(seconds=seconds)
