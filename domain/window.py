"""Meta's 24-hour customer-service window, as decisions over values (the clock is a parameter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

SERVICE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowState:
    """What we know of one (sender, contact) pair.

    ``last_inbound_at`` is Meta's timestamp of the customer's newest message. ``closed_at`` is set
    when Meta told us the window was closed (error 131047) although our clock said open; a newer
    inbound message overrides it.
    """

    last_inbound_at: datetime | None
    closed_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowView:
    open: bool
    last_inbound_at: datetime | None
    closes_at: datetime | None
    seconds_remaining: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowed:
    last_inbound_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowClosed:
    last_inbound_at: datetime | None
    window_closed_at: datetime | None


def _closes_at(state: WindowState) -> datetime | None:
    if state.last_inbound_at is None:
        return None
    natural = state.last_inbound_at + SERVICE_WINDOW
    if state.closed_at is not None and state.closed_at >= state.last_inbound_at:
        return min(natural, state.closed_at)
    return natural


def window_open(state: WindowState, now: datetime) -> bool:
    """Open iff ``now < last_inbound_at + 24h`` (closed at exactly 24 h) and Meta has not said
    otherwise since the last inbound message."""
    closes_at = _closes_at(state)
    return closes_at is not None and now < closes_at


def decide_send(state: WindowState, now: datetime) -> Allowed | WindowClosed:
    """May a free-form message go to this contact now?"""
    if window_open(state, now) and state.last_inbound_at is not None:
        return Allowed(last_inbound_at=state.last_inbound_at)
    return WindowClosed(last_inbound_at=state.last_inbound_at, window_closed_at=_closes_at(state))


def describe_window(state: WindowState, now: datetime) -> WindowView:
    closes_at = _closes_at(state)
    is_open = window_open(state, now)
    remaining = int((closes_at - now).total_seconds()) if is_open and closes_at else 0
    return WindowView(
        open=is_open,
        last_inbound_at=state.last_inbound_at,
        closes_at=closes_at,
        seconds_remaining=remaining,
    )


def later_inbound(current: datetime | None, incoming: datetime) -> datetime:
    """``last_inbound_at`` only ever moves forward (webhooks arrive late and out of order)."""
    return incoming if current is None or incoming > current else current
