"""The 24-hour customer-service window (API.md "service window", cloud-api.md §5)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.window import (
    SERVICE_WINDOW,
    Allowed,
    WindowClosed,
    WindowState,
    decide_send,
    describe_window,
    later_inbound,
    window_open,
)

DAY = timedelta(hours=24)
TICK = timedelta(microseconds=1)
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

instants = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - bounds are naive; timezones= makes them aware
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
#: How far "now" is from some instant: a few days either side, to the microsecond.
offsets = st.timedeltas(min_value=-timedelta(days=3), max_value=timedelta(days=3))
within_window = st.timedeltas(min_value=timedelta(0), max_value=DAY - TICK)


def test_the_window_is_twenty_four_hours() -> None:
    assert SERVICE_WINDOW == DAY


@given(last=instants, offset=offsets)
def test_open_iff_now_is_before_last_inbound_plus_24h(last: datetime, offset: timedelta) -> None:
    state = WindowState(last_inbound_at=last)
    assert window_open(state, last + offset) == (offset < DAY)


def test_closed_at_exactly_24h_and_open_one_microsecond_before() -> None:
    state = WindowState(last_inbound_at=T0)
    assert window_open(state, T0)
    assert window_open(state, T0 + DAY - TICK)
    assert not window_open(state, T0 + DAY)
    assert not window_open(state, T0 + DAY + TICK)


def test_no_inbound_message_means_closed() -> None:
    assert not window_open(WindowState(last_inbound_at=None), T0)


def test_instants_in_other_timezones_compare_as_the_same_moment() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    state = WindowState(last_inbound_at=T0)
    # T0 + 24h, written in India's offset: the same instant, so closed.
    assert not window_open(state, (T0 + DAY).astimezone(india))
    assert window_open(state, (T0 + DAY - TICK).astimezone(india))


@given(
    last=instants,
    gap=st.timedeltas(min_value=TICK, max_value=timedelta(days=10)),
    closed_by_meta=st.booleans(),
    after=within_window,
)
def test_a_newer_inbound_reopens_the_window_for_a_full_24h(
    last: datetime, gap: timedelta, closed_by_meta: bool, after: timedelta
) -> None:
    newer = last + gap
    # Meta may have said "closed" (131047) at some point before the newer inbound message.
    closed_at = last + gap / 2 if closed_by_meta else None
    before = WindowState(last_inbound_at=last, closed_at=closed_at)
    reopened = WindowState(last_inbound_at=later_inbound(before.last_inbound_at, newer))
    reopened_with_old_close = WindowState(
        last_inbound_at=later_inbound(before.last_inbound_at, newer), closed_at=closed_at
    )
    for state in (reopened, reopened_with_old_close):
        assert state.last_inbound_at == newer
        assert window_open(state, newer + after)
        assert not window_open(state, newer + DAY)


@given(current=st.none() | instants, incoming=instants)
def test_later_inbound_never_moves_back(current: datetime | None, incoming: datetime) -> None:
    result = later_inbound(current, incoming)
    assert result == (incoming if current is None else max(current, incoming))


@given(arrivals=st.lists(instants, min_size=1, max_size=20), data=st.data())
def test_late_and_out_of_order_webhooks_leave_the_newest_inbound(
    arrivals: list[datetime], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(arrivals))
    last: datetime | None = None
    for incoming in shuffled:
        previous = last
        last = later_inbound(last, incoming)
        assert previous is None or last >= previous
    assert last == max(arrivals)


@given(
    last=instants,
    said_closed_after=st.timedeltas(min_value=timedelta(0), max_value=DAY),
    offset=offsets,
)
def test_meta_saying_closed_closes_the_window_until_a_newer_inbound(
    last: datetime, said_closed_after: timedelta, offset: timedelta
) -> None:
    closed_at = last + said_closed_after
    state = WindowState(last_inbound_at=last, closed_at=closed_at)
    now = closed_at + offset
    assert window_open(state, now) == (now < closed_at)
    assert decide_send(state, max(now, closed_at)) == WindowClosed(
        last_inbound_at=last, window_closed_at=closed_at
    )


@given(last=instants, said_closed_before=st.timedeltas(min_value=TICK, max_value=DAY), now=offsets)
def test_a_close_reported_before_the_newest_inbound_is_ignored(
    last: datetime, said_closed_before: timedelta, now: timedelta
) -> None:
    state = WindowState(last_inbound_at=last, closed_at=last - said_closed_before)
    assert window_open(state, last + now) == (now < DAY)


def test_a_close_reported_after_the_window_expired_keeps_the_natural_close_time() -> None:
    state = WindowState(last_inbound_at=T0, closed_at=T0 + DAY + timedelta(hours=3))
    assert decide_send(state, T0 + DAY + timedelta(hours=4)) == WindowClosed(
        last_inbound_at=T0, window_closed_at=T0 + DAY
    )


@given(last=instants, offset=offsets)
def test_decide_send_allows_inside_the_window_and_says_why_not_outside(
    last: datetime, offset: timedelta
) -> None:
    decision = decide_send(WindowState(last_inbound_at=last), last + offset)
    if offset < DAY:
        assert decision == Allowed(last_inbound_at=last)
    else:
        assert decision == WindowClosed(last_inbound_at=last, window_closed_at=last + DAY)


def test_decide_send_with_no_inbound_message_is_closed_with_nulls() -> None:
    decision = decide_send(WindowState(last_inbound_at=None), T0)
    assert decision == WindowClosed(last_inbound_at=None, window_closed_at=None)


def test_decide_send_examples() -> None:
    state = WindowState(last_inbound_at=T0)
    assert decide_send(state, T0 + timedelta(hours=23, minutes=59)) == Allowed(last_inbound_at=T0)
    assert decide_send(state, T0 + DAY) == WindowClosed(
        last_inbound_at=T0, window_closed_at=T0 + DAY
    )


@settings(max_examples=200)
@given(last=instants, offset=offsets)
def test_describe_window_counts_the_whole_seconds_remaining(
    last: datetime, offset: timedelta
) -> None:
    now = last + offset
    view = describe_window(WindowState(last_inbound_at=last), now)
    assert view.last_inbound_at == last
    assert view.closes_at == last + DAY
    assert view.open == (offset < DAY)
    if view.open:
        left = (last + DAY - now).total_seconds()
        assert view.seconds_remaining == math.floor(left)
    else:
        assert view.seconds_remaining == 0


def test_describe_window_examples() -> None:
    state = WindowState(last_inbound_at=T0)
    one_hour_left = describe_window(state, T0 + timedelta(hours=23))
    assert (one_hour_left.open, one_hour_left.seconds_remaining) == (True, 3600)
    assert describe_window(state, T0).seconds_remaining == 86400
    assert describe_window(state, T0 + DAY - timedelta(seconds=1)).seconds_remaining == 1
    expired = describe_window(state, T0 + DAY)
    assert (expired.open, expired.seconds_remaining, expired.closes_at) == (False, 0, T0 + DAY)


def test_describe_window_without_inbound_and_after_meta_closed_it() -> None:
    never = describe_window(WindowState(last_inbound_at=None), T0)
    assert (never.open, never.last_inbound_at, never.closes_at, never.seconds_remaining) == (
        False,
        None,
        None,
        0,
    )
    closed = WindowState(last_inbound_at=T0, closed_at=T0 + timedelta(hours=2))
    view = describe_window(closed, T0 + timedelta(hours=3))
    assert (view.open, view.closes_at, view.seconds_remaining) == (
        False,
        T0 + timedelta(hours=2),
        0,
    )
