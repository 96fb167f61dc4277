"""Identifiers: time-ordered (ULID layout: 48-bit milliseconds + 80 random bits, Crockford
base32), so new rows append to the primary-key index instead of splitting it."""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CORRELATION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def ulid(now_ms: int | None = None) -> str:
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
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
