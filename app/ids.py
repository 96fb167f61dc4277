"""Identifiers: time-ordered (ULID layout: 48-bit milliseconds + 80 random bits, Crockford
base32), so new rows append to the primary-key index instead of splitting it."""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CORRELATION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


_last = [0, 0]  # the previous id's milliseconds and random part


def ulid(now_ms: int | None = None) -> str:
    """Monotonic within this process: ids made in the same millisecond still sort in the order
    they were made (the random part is incremented)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if ms <= _last[0]:
        ms, rand = _last[0], _last[1] + 1
        if rand >= 1 << 80:  # 2**80 ids in one millisecond: move to the next one
            ms, rand = ms + 1, secrets.randbits(79)
    else:
        rand = secrets.randbits(79)  # leaves room to count up within the millisecond
    _last[0], _last[1] = ms, rand
    value = (ms << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def message_id() -> str:
    return "msg_" + ulid()


def key_id() -> str:
    return "key_" + ulid()


def client_id() -> str:
    return "cli_" + ulid()


def correlation_id() -> str:
    return "req_" + ulid()


def api_key_secret() -> str:
    """What the caller sends; only its SHA-256 is stored."""
    return "wrk_" + secrets.token_urlsafe(32)
