"""Phone numbers as clients write them, and the ``wa_id`` the Cloud API wants (API.md `to`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.phones import InvalidPhoneNumber, e164, normalise_phone

#: Any valid wa_id: 7-15 ASCII digits, never starting with 0.
wa_ids = st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True)
separators = st.text(alphabet=" -()", max_size=3)


@pytest.mark.parametrize(
    ("raw", "wa_id"),
    [
        ("+14155552671", "14155552671"),
        ("14155552671", "14155552671"),
        ("+1 (415) 555-2671", "14155552671"),
        ("1.415.555.2671", "14155552671"),
        ("  +44 20 7946 0958  ", "442079460958"),
        ("+49\t30\t901820", "4930901820"),
        ("(+55) 11 98765-4321", "5511987654321"),
    ],
)
def test_separators_and_the_plus_are_dropped(raw: str, wa_id: str) -> None:
    assert normalise_phone(raw) == wa_id


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        ("123456", False),  # 6 digits
        ("1234567", True),  # 7 digits: the shortest E.164 number we take
        ("+1234567", True),
        ("123456789012345", True),  # 15 digits: E.164's maximum
        ("+123456789012345", True),
        ("1234567890123456", False),  # 16 digits
        ("+1 234 567 890 123 456", False),  # 16 digits, separators do not count
    ],
)
def test_seven_to_fifteen_digits(raw: str, accepted: bool) -> None:
    if accepted:
        assert normalise_phone(raw) == raw.replace("+", "").replace(" ", "")
    else:
        with pytest.raises(InvalidPhoneNumber, match="7 to 15 digits"):
            normalise_phone(raw)


@pytest.mark.parametrize("raw", ["04155552671", "+04155552671", "00 44 20 7946 0958", "0 1234567"])
def test_a_leading_zero_is_a_trunk_or_international_prefix_not_a_country_code(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="never with 0"):
        normalise_phone(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0662\u0666\u0667",  # Arabic-Indic digits
        "\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff12\uff16\uff17",  # fullwidth digits
        "+1415555267\u0661",  # one non-ASCII digit at the end
        "+1415555267\u00b9",  # superscript one (str.isdigit() says True)
        "\u0967\u096a\u0967\u096b\u096b\u096b\u096b\u0968\u096c\u096d",  # Devanagari digits
    ],
)
def test_non_ascii_digits_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalise_phone(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "+",
        "++14155552671",
        "1415+5552671",
        "14155552671+",
        "1-800-FLOWERS",
        "+1 415 555 2671 ext 3",
        "+1/415/555/2671",
        "+1_415_555_2671",
        "+1\n415 555 2671",
        "tel:+14155552671",
    ],
)
def test_anything_but_digits_and_separators_is_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalise_phone(raw)


def test_invalid_phone_number_is_a_value_error_with_a_message() -> None:
    with pytest.raises(ValueError, match="digits") as caught:
        normalise_phone("not a number")
    assert isinstance(caught.value, InvalidPhoneNumber)


def test_e164_adds_the_plus() -> None:
    assert e164("14155552671") == "+14155552671"


@settings(max_examples=300)
@given(wa_id=wa_ids, data=st.data())
def test_any_written_form_of_a_wa_id_normalises_back_to_it(wa_id: str, data: st.DataObject) -> None:
    """A + (or not), and spaces, dashes and parentheses anywhere, before or after the +."""
    gaps = data.draw(st.lists(separators, min_size=len(wa_id) + 1, max_size=len(wa_id) + 1))
    body = "".join(gap + digit for gap, digit in zip(gaps, wa_id, strict=False)) + gaps[-1]
    plus = data.draw(st.sampled_from(["", "+"]))
    before_plus = data.draw(separators)
    written = before_plus + plus + body
    assert normalise_phone(written) == wa_id
    assert e164(normalise_phone(written)) == "+" + wa_id


@given(wa_id=wa_ids)
def test_e164_form_normalises_back_to_the_wa_id(wa_id: str) -> None:
    assert normalise_phone(e164(wa_id)) == wa_id


@given(digits=st.from_regex(r"[1-9][0-9]{0,5}|[1-9][0-9]{15,30}", fullmatch=True))
def test_too_short_or_too_long_numbers_are_refused(digits: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalise_phone("+" + digits)
