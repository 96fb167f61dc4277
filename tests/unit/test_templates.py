"""The template preflight (domain/templates.py) against catalog entries shaped like Meta's listing
(cloud-api.md §7), and the status a template webhook event leaves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from domain.content import Template
from domain.templates import (
    CatalogTemplate,
    ParameterFormat,
    TemplateRejected,
    check_template,
    parameter_format,
    placeholders,
    status_after_event,
)

ORDER_CONFIRMATION = CatalogTemplate(
    name="order_confirmation",
    language="en_US",
    status="APPROVED",
    category="UTILITY",
    components=(
        {"type": "HEADER", "format": "TEXT", "text": "Act fast, {{1}}!"},
        {"type": "BODY", "text": "Hi {{1}}! Your order number is {{2}}."},
        {"type": "FOOTER", "text": "Lucky Shrub"},
        {"type": "BUTTONS", "buttons": [{"type": "URL", "url": "https://ex.com/t/{{1}}"}]},
    ),
)
NAMED = CatalogTemplate(
    name="appointment_reminder",
    language="en_US",
    status="APPROVED",
    category="UTILITY",
    parameter_format=ParameterFormat.NAMED,
    components=({"type": "BODY", "text": "Hi {{first_name}}, see you on {{date}} ({{date}})."},),
)
IMAGE_HEADER = CatalogTemplate(
    name="new_arrivals",
    language="en",
    status="APPROVED",
    category="MARKETING",
    components=(
        {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::aW..."]}},
        {"type": "BODY", "text": "New in store this week."},
    ),
)


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def named(name: str, value: str) -> dict[str, str]:
    return {"type": "text", "parameter_name": name, "text": value}


def send(entry: CatalogTemplate, *components: Mapping[str, Any]) -> Template:
    return Template(name=entry.name, language=entry.language, components=tuple(components))


def rejected(
    request: Template, entry: CatalogTemplate | None, *, synced: bool = True
) -> TemplateRejected:
    with pytest.raises(TemplateRejected) as caught:
        check_template(request, entry, catalog_synced=synced)
    return caught.value


# --- positional ---------------------------------------------------------------------------------


def test_positional_template_with_every_placeholder_filled_passes() -> None:
    request = send(
        ORDER_CONFIRMATION,
        {"type": "header", "parameters": [text("Pablo")]},
        {"type": "body", "parameters": [text("Pablo"), text("860198-230332")]},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [text("x")]},
    )

    check_template(request, ORDER_CONFIRMATION, catalog_synced=True)


def test_positional_body_short_of_a_parameter_is_a_mismatch() -> None:
    request = send(
        ORDER_CONFIRMATION,
        {"type": "header", "parameters": [text("Pablo")]},
        {"type": "body", "parameters": [text("Pablo")]},
    )

    error = rejected(request, ORDER_CONFIRMATION)

    assert error.code == "template_parameter_mismatch"
    assert error.param == "template.components"
    assert error.detail == "body expects 2 parameters, got 1"


def test_missing_text_header_parameter_is_a_mismatch() -> None:
    request = send(ORDER_CONFIRMATION, {"type": "body", "parameters": [text("a"), text("b")]})

    assert rejected(request, ORDER_CONFIRMATION).detail == "header expects 1 parameter, got 0"


def test_parameters_for_a_template_without_placeholders_are_a_mismatch() -> None:
    plain = CatalogTemplate(
        name="hello_world",
        language="en_US",
        status="APPROVED",
        components=({"type": "BODY", "text": "Welcome!"},),
    )

    error = rejected(send(plain, {"type": "BODY", "parameters": [text("x")]}), plain)

    assert error.detail == "body expects 0 parameters, got 1"
    check_template(send(plain), plain, catalog_synced=True)


def test_a_repeated_positional_placeholder_counts_once() -> None:
    assert placeholders("{{1}} and {{2}}, again {{1}}; {{ first_name }}") == [
        "1",
        "2",
        "first_name",
    ]


# --- named --------------------------------------------------------------------------------------


def test_named_template_takes_its_names_in_any_order() -> None:
    request = send(
        NAMED, {"type": "body", "parameters": [named("date", "Monday"), named("first_name", "A")]}
    )

    check_template(request, NAMED, catalog_synced=True)


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ([named("first_name", "A"), named("day", "Mon")], "missing date; unknown day"),
        ([named("first_name", "A"), text("Mon")], "missing date; 1 without parameter_name"),
        ([named("first_name", "A"), named("first_name", "B")], "missing date"),
    ],
)
def test_named_template_with_other_names_is_a_mismatch(
    parameters: list[dict[str, str]], fragment: str
) -> None:
    error = rejected(send(NAMED, {"type": "body", "parameters": parameters}), NAMED)

    assert error.code == "template_parameter_mismatch"
    assert error.param == "template.components"
    assert error.detail.startswith("body expects parameters named first_name, date (")
    assert fragment in error.detail


def test_named_template_counts_parameters_first() -> None:
    request = send(NAMED, {"type": "body", "parameters": [named("first_name", "A")]})

    assert rejected(request, NAMED).detail == "body expects 2 parameters, got 1"


def test_parameter_format_defaults_to_positional() -> None:
    assert parameter_format(None) is ParameterFormat.POSITIONAL
    assert parameter_format("named") is ParameterFormat.NAMED
    assert parameter_format("POSITIONAL") is ParameterFormat.POSITIONAL


# --- media header -------------------------------------------------------------------------------


def test_image_header_takes_exactly_one_parameter() -> None:
    image = {"type": "image", "image": {"link": "https://ex.com/banner.png"}}

    check_template(
        send(IMAGE_HEADER, {"type": "header", "parameters": [image]}),
        IMAGE_HEADER,
        catalog_synced=True,
    )
    assert rejected(send(IMAGE_HEADER), IMAGE_HEADER).detail == "header expects 1 parameter, got 0"
    assert (
        rejected(
            send(IMAGE_HEADER, {"type": "header", "parameters": [image, image]}), IMAGE_HEADER
        ).detail
        == "header expects 1 parameter, got 2"
    )


# --- existence and status -----------------------------------------------------------------------


def test_unknown_name_or_language_is_not_found() -> None:
    error = rejected(Template(name="order_confirmation", language="pt_BR"), None)

    assert error.code == "template_not_found"
    assert error.param == "template.name"
    assert "order_confirmation (pt_BR)" in error.detail


@pytest.mark.parametrize("status", ["PAUSED", "PENDING", "REJECTED", "DISABLED"])
def test_a_template_not_approved_names_its_status(status: str) -> None:
    paused = CatalogTemplate(name="promo", language="en", status=status, components=())

    error = rejected(send(paused), paused)

    assert error.code == "template_not_approved"
    assert error.param == "template.name"
    assert status in error.detail


def test_status_is_checked_before_parameters() -> None:
    paused = CatalogTemplate(
        name="promo", language="en", status="PAUSED", components=ORDER_CONFIRMATION.components
    )

    assert rejected(send(paused), paused).code == "template_not_approved"


def test_a_template_known_only_from_a_webhook_has_its_parameters_unchecked() -> None:
    minimal = CatalogTemplate(name="promo", language="en", status="APPROVED", components=None)

    check_template(
        send(minimal, {"type": "body", "parameters": [text("x")]}), minimal, catalog_synced=True
    )


# --- no catalog ---------------------------------------------------------------------------------


def test_nothing_is_checked_before_the_catalog_was_synced() -> None:
    check_template(Template(name="anything", language="en"), None, catalog_synced=False)
    paused = CatalogTemplate(name="promo", language="en", status="PAUSED")
    check_template(send(paused), paused, catalog_synced=False)


# --- webhook events -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "current", "expected"),
    [
        ("APPROVED", "PENDING", "APPROVED"),
        ("PAUSED", "APPROVED", "PAUSED"),
        ("REINSTATED", "PAUSED", "APPROVED"),
        ("FLAGGED", "APPROVED", "APPROVED"),
        ("FLAGGED", None, "APPROVED"),
        ("FLAGGED", "PAUSED", "PAUSED"),
        ("DISABLED", "APPROVED", "DISABLED"),
        ("rejected", None, "REJECTED"),
        ("SOMETHING_NEW", "APPROVED", None),
    ],
)
def test_status_after_event(event: str, current: str | None, expected: str | None) -> None:
    assert status_after_event(event, current) == expected


def test_a_header_format_we_do_not_know_is_left_to_meta() -> None:
    gif = CatalogTemplate(
        name="gif_promo",
        language="en",
        status="APPROVED",
        components=({"type": "HEADER", "format": "GIF"}, {"type": "BODY", "text": "Hi {{1}}"}),
    )
    header = {"type": "header", "parameters": [{"type": "gif", "gif": {"link": "https://x"}}]}

    check_template(
        send(gif, header, {"type": "body", "parameters": [text("A")]}), gif, catalog_synced=True
    )
    assert rejected(send(gif, header), gif).detail == "body expects 1 parameter, got 0"
