"""What a Cloud API error code means for the dispatcher (cloud-api.md §3.2).

Meta: base the handling on ``code`` (and ``error_data.details``), not on the HTTP status, which
has changed over time. The HTTP status only decides when no code came back at all.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum


class ErrorClass(StrEnum):
    TRANSIENT = "transient"  # back off and retry the same message
    PERMANENT = "permanent"  # fail this message with Meta's reason
    SENDER_WIDE = "sender_wide"  # the sending number itself is blocked: pause it, keep messages


RE_ENGAGEMENT = 131047  # the 24-hour window is closed on Meta's side
PAIR_RATE_LIMIT = 131056
THROUGHPUT_LIMIT = 130429

TRANSIENT_CODES = frozenset(
    {1, 2, 4, 613, 80007, THROUGHPUT_LIMIT, 131000, 131016, PAIR_RATE_LIMIT, 131057, 133004}
)
SENDER_WIDE_CODES = frozenset({0, 3, 10, 190, 368, 131031, 131042, 131045, 131048, 133010})
_PERMISSION_CODES = range(200, 300)


def classify(code: int | None, http_status: int | None) -> ErrorClass:
    """Classify one failed send: a Meta error code if there is one, else the HTTP status.

    No code and no status (a timeout, a reset connection) is transient.
    """
    if code is not None:
        if code in TRANSIENT_CODES:
            return ErrorClass.TRANSIENT
        if code in SENDER_WIDE_CODES or code in _PERMISSION_CODES:
            return ErrorClass.SENDER_WIDE
        return ErrorClass.PERMANENT
    if http_status is None or http_status >= 500 or http_status in (408, 429):
        return ErrorClass.TRANSIENT
    if http_status in (401, 403):
        return ErrorClass.SENDER_WIDE
    return ErrorClass.PERMANENT


#: How long a sender-wide error pauses the sender. ``None``: until an operator runs
#: ``wa-router senders resume`` (a token, an account or billing must be fixed by a human).
SENDER_PAUSES: dict[int, timedelta | None] = {
    368: timedelta(hours=24),  # temporarily blocked for policy violations
    131048: timedelta(hours=1),  # spam rate limit: restricted for a while
}
DEFAULT_SENDER_PAUSE: timedelta | None = None


def sender_pause(code: int | None) -> timedelta | None:
    """The cool-down after a sender-wide error, or None when only a human can resume."""
    if code is None:
        return timedelta(minutes=15)  # an unexplained 401/403: look again later
    return SENDER_PAUSES.get(code, DEFAULT_SENDER_PAUSE)
