"""Phone numbers as the Cloud API wants them: a ``wa_id`` is country code + number, digits only."""

from __future__ import annotations

_SEPARATORS = str.maketrans("", "", " -.()\t")
MIN_DIGITS = 7
MAX_DIGITS = 15


class InvalidPhoneNumber(ValueError):
    """The text is not an E.164 number once separators are removed."""


def normalise_phone(raw: str) -> str:
    """Return the ``wa_id`` (digits only) of an E.164 number written with or without ``+``.

    Spaces, dashes, dots and parentheses are stripped; what remains must be 7-15 ASCII digits
    that do not start with 0 (a trunk or international prefix, never a country code).
    """
    compact = raw.strip().translate(_SEPARATORS)
    digits = compact[1:] if compact.startswith("+") else compact
    if not digits.isascii() or not digits.isdigit():
        raise InvalidPhoneNumber("a phone number holds digits, optionally a leading +")
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise InvalidPhoneNumber(
            f"a phone number has {MIN_DIGITS} to {MAX_DIGITS} digits with its country code"
        )
    if digits[0] == "0":
        raise InvalidPhoneNumber("a phone number starts with its country code, never with 0")
    return digits


def e164(wa_id: str) -> str:
    """The form we always send to Meta: ``+`` and the digits (without it Meta would prepend the
    business number's own country code, cloud-api.md §8)."""
    return "+" + wa_id
