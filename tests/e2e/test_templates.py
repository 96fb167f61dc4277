"""The template catalog through the app: `wa-router templates sync`, the 422s of
POST /v1/whatsapp/templates against it, template webhooks keeping it current, and the approved
templates listed by outside_service_window."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from adapters.cloud_api.client import CloudApiClient, GraphHttp
from adapters.cloud_api.sandbox import SANDBOX_SENDER_ID, SANDBOX_WABA_ID
from adapters.db import keys as key_repo
from adapters.db import messages as message_repo
from adapters.db.tables import message_events
from app.cli import _templates_sync, main
from app.runtime import Tuning
from app.services.templates import sync_catalog
from domain.model import Sender
from tests.e2e.conftest import CUSTOMER, SENDER, Router, router_settings, running_router
from tests.e2e.test_bad_input import assert_problem
from tests.e2e.test_operations import scrape, value

WABA = "102290129340398"
TEMPLATES = "/v1/whatsapp/templates"

CATALOG: list[dict[str, Any]] = [
    {
        "name": "order_shipped",
        "language": "en_US",
        "status": "APPROVED",
        "category": "UTILITY",
        "parameter_format": "POSITIONAL",
        "id": "1001",
        "components": [
            {"type": "BODY", "text": "Hi {{1}}, order {{2}} has shipped"},
            {"type": "FOOTER", "text": "Acme"},
        ],
    },
    {
        "name": "appointment_reminder",
        "language": "en_US",
        "status": "APPROVED",
        "category": "UTILITY",
        "parameter_format": "NAMED",
        "id": "1002",
        "components": [{"type": "BODY", "text": "Hi {{first_name}}, see you on {{date}}"}],
    },
    {
        "name": "new_arrivals",
        "language": "en",
        "status": "APPROVED",
        "category": "MARKETING",
        "id": "1003",
        "components": [
            {"type": "HEADER", "format": "IMAGE"},
            {"type": "BODY", "text": "New this week"},
        ],
    },
    {
        "name": "spring_sale",
        "language": "en_US",
        "status": "PAUSED",
        "category": "MARKETING",
        "id": "1004",
        "components": [{"type": "BODY", "text": "20% off"}],
    },
]


def graph_listing(
    catalog: list[dict[str, Any]], seen: list[httpx.Request] | None = None
) -> httpx.MockTransport:
    """Graph's GET /{waba}/message_templates, two templates a page."""

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        assert request.url.path == f"/v25.0/{WABA}/message_templates"
        start = int(request.url.params.get("after", "0"))
        body: dict[str, Any] = {"data": catalog[start : start + 2]}
        if start + 2 < len(catalog):
            body["paging"] = {
                "cursors": {"after": str(start + 2)},
                "next": "https://graph.example/next",
            }
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


async def register(router: Router, waba_id: str | None = WABA) -> None:
    async with router.services.db.write() as conn:
        await key_repo.upsert_sender(
            conn, Sender(phone_number_id=SENDER, waba_id=waba_id), now=datetime.now(UTC)
        )
    router.services.senders.forget()


async def sync(router: Router, catalog: list[dict[str, Any]] = CATALOG) -> None:
    async with GraphHttp(
        transport=graph_listing(catalog), base_url="https://graph.example"
    ) as http:
        result = await sync_catalog(
            router.services.db,
            CloudApiClient(http, token="test-token", version="v25.0"),
            WABA,
            now=datetime.now(UTC),
        )
    assert result.templates == len(catalog)


def template_body(name: str, language: str = "en_US", *components: dict[str, Any]) -> Any:
    return {
        "sender_id": SENDER,
        "to": "+" + CUSTOMER,
        "template": {"name": name, "language": language, "components": list(components)},
    }


def body_params(*values: str) -> dict[str, Any]:
    return {"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}


def template_webhook(field: str, value: dict[str, Any], waba_id: str = WABA) -> bytes:
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": waba_id,
                    "time": int(datetime.now(UTC).timestamp()),
                    "changes": [{"field": field, "value": value}],
                }
            ],
        }
    ).encode()


def status_update(event: str, name: str = "order_shipped", **extra: Any) -> bytes:
    return template_webhook(
        "message_template_status_update",
        {
            "event": event,
            "message_template_id": 1001,
            "message_template_name": name,
            "message_template_language": "en_US",
            "reason": None,
            "other_info": {"title": "FIRST_PAUSE"},  # unknown fields are tolerated
            **extra,
        },
    )


@pytest.fixture
async def synced(router: Router) -> dict[str, str]:
    """The sender on WABA, its catalog synced from CATALOG; an all-scope key's headers."""
    await register(router)
    await sync(router)
    return await router.key()


async def send_ok(router: Router, headers: dict[str, str], body: Any) -> dict[str, Any]:
    response = await router.client.post(TEMPLATES, json=body, headers=headers)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = await router.wait_for(response.json()["id"], headers, "accepted")
    return accepted


# --- 422s against the catalog ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param", "detail"),
    [
        (
            template_body("order_shiped", "en_US", body_params("Ana", "#1")),
            "template_not_found",
            "template.name",
            "order_shiped (en_US)",
        ),
        (
            template_body("order_shipped", "pt_BR", body_params("Ana", "#1")),
            "template_not_found",
            "template.name",
            "order_shipped (pt_BR)",
        ),
        (
            template_body("spring_sale", "en_US"),
            "template_not_approved",
            "template.name",
            "is PAUSED",
        ),
        (
            template_body("order_shipped", "en_US", body_params("Ana")),
            "template_parameter_mismatch",
            "template.components",
            "body expects 2 parameters, got 1",
        ),
        (
            template_body(
                "appointment_reminder",
                "en_US",
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "parameter_name": "first_name", "text": "Ana"},
                        {"type": "text", "parameter_name": "day", "text": "Mon"},
                    ],
                },
            ),
            "template_parameter_mismatch",
            "template.components",
            "missing date; unknown day",
        ),
        (
            template_body("new_arrivals", "en"),
            "template_parameter_mismatch",
            "template.components",
            "header expects 1 parameter, got 0",
        ),
    ],
)
async def test_catalog_refusals_store_nothing_and_send_nothing(
    router: Router,
    synced: dict[str, str],
    body: Any,
    code: str,
    param: str,
    detail: str,
) -> None:
    response = await router.client.post(TEMPLATES, json=body, headers=synced)

    problem = assert_problem(response, 422, code, param)
    assert detail in problem["detail"]
    assert await router.stored_messages() == 0
    # The refusal is kept for the support trace, like a window refusal.
    async with router.services.db.read() as conn:
        events = (await conn.execute(message_events.select())).mappings().all()
    assert [(e["kind"], e["detail"]["code"]) for e in events] == [
        (message_repo.EventKind.REQUEST, code)
    ]
    # A good send afterwards is the only thing that reaches the Cloud API.
    await send_ok(router, synced, template_body("order_shipped", "en_US", body_params("A", "1")))
    assert [r.body["template"]["name"] for r in router.graph.requests] == ["order_shipped"]


async def test_templates_that_fit_the_catalog_go_out(
    router: Router, synced: dict[str, str]
) -> None:
    image = {"type": "image", "image": {"link": "https://ex.com/banner.png"}}
    named = {
        "type": "body",
        "parameters": [
            {"type": "text", "parameter_name": "date", "text": "Monday"},
            {"type": "text", "parameter_name": "first_name", "text": "Ana"},
        ],
    }

    await send_ok(router, synced, template_body("appointment_reminder", "en_US", named))
    await send_ok(
        router,
        synced,
        template_body("new_arrivals", "en", {"type": "header", "parameters": [image]}),
    )

    assert len(router.graph.requests) == 2


async def test_nothing_is_checked_before_any_sync(router: Router) -> None:
    await register(router)
    headers = await router.key()

    await send_ok(router, headers, template_body("anything_at_all", "en_US", body_params("x")))


async def test_a_sender_without_waba_id_is_never_checked(router: Router) -> None:
    await register(router, waba_id=None)
    headers = await router.key()

    await send_ok(router, headers, template_body("anything_at_all", "en"))


# --- webhooks -----------------------------------------------------------------------------------


async def test_paused_then_reinstated_by_webhook(router: Router, synced: dict[str, str]) -> None:
    body = template_body("order_shipped", "en_US", body_params("Ana", "#123"))

    assert (await router.webhook(status_update("PAUSED", reason="LOW_QUALITY"))).status_code == 200
    paused = await router.client.post(TEMPLATES, json=body, headers=synced)
    assert "PAUSED" in assert_problem(paused, 422, "template_not_approved")["detail"]

    assert (await router.webhook(status_update("REINSTATED"))).status_code == 200
    await send_ok(router, synced, body)

    assert (await router.webhook(status_update("FLAGGED"))).status_code == 200
    await send_ok(router, synced, body)  # flagged is a warning: still sendable

    samples = await scrape(router)
    assert value(samples, "wa_router_webhook_events_total", kind="template_update") == 3


async def test_webhook_for_an_unknown_template_adds_it(
    router: Router, synced: dict[str, str]
) -> None:
    assert (await router.webhook(status_update("APPROVED", name="brand_new"))).status_code == 200

    # Known by name and status only: its parameters are left to Meta.
    await send_ok(router, synced, template_body("brand_new", "en_US", body_params("a", "b", "c")))
    assert (await router.webhook(status_update("DISABLED", name="brand_new"))).status_code == 200
    refused = await router.client.post(
        TEMPLATES, json=template_body("brand_new", "en_US"), headers=synced
    )
    assert_problem(refused, 422, "template_not_approved", "template.name")


async def test_category_update_shows_in_outside_window(
    router: Router, synced: dict[str, str]
) -> None:
    change = template_webhook(
        "template_category_update",
        {
            "message_template_id": 1001,
            "message_template_name": "order_shipped",
            "message_template_language": "en_US",
            "previous_category": "UTILITY",
            "new_category": "MARKETING",
        },
    )
    assert (await router.webhook(change)).status_code == 200

    problem = assert_problem(await router.send(synced, text="hi"), 422, "outside_service_window")

    assert {"name": "order_shipped", "language": "en_US", "category": "MARKETING"} in problem[
        "templates"
    ]


# --- outside_service_window ---------------------------------------------------------------------


async def test_outside_window_lists_the_approved_templates(
    router: Router, synced: dict[str, str]
) -> None:
    response = await router.send(synced, sender_id=SENDER, text="Your order has shipped")

    problem = assert_problem(response, 422, "outside_service_window", "to")
    assert problem["templates_url"] == TEMPLATES
    assert problem["templates"] == [
        {"name": "appointment_reminder", "language": "en_US", "category": "UTILITY"},
        {"name": "new_arrivals", "language": "en", "category": "MARKETING"},
        {"name": "order_shipped", "language": "en_US", "category": "UTILITY"},
    ]


async def test_outside_window_lists_nothing_before_a_sync(router: Router) -> None:
    await register(router)
    headers = await router.key()

    problem = assert_problem(await router.send(headers, text="hi"), 422, "outside_service_window")

    assert problem["templates"] == []


# --- wa-router templates sync ---------------------------------------------------------------------


async def test_cli_sync_with_a_token_pulls_every_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests: list[httpx.Request] = []
    tuning = Tuning(graph_transport=graph_listing(CATALOG, requests))
    async with running_router(tmp_path, worker="off") as router:
        settings = msgspec.structs.replace(
            router_settings(tmp_path), database_url=router.services.db.url
        )
        await register(router)
        headers = await router.key()
        capsys.readouterr()

        code = await _templates_sync(settings, argparse.Namespace(sender=None), tuning)

        assert code == 0
        assert capsys.readouterr().out == f"WABA {WABA}: 4 templates, 3 approved\n"
        assert len(requests) == 2
        assert requests[0].headers["authorization"] == "Bearer test-token"
        refused = await router.client.post(
            TEMPLATES, json=template_body("spring_sale"), headers=headers
        )
        assert_problem(refused, 422, "template_not_approved")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_sync_in_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ACCESS_TOKEN", "APP_SECRET", "WORKER", "PORT", "HOST"):
        monkeypatch.delenv("WA_ROUTER_" + name, raising=False)
    monkeypatch.setenv("WA_ROUTER_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    assert cli(capsys, "templates", "sync")[0:2] == (
        0,
        "no sender has a WABA id; set one with: wa-router senders add --phone-number-id ID "
        "--waba-id ID\n",
    )
    add = ("senders", "add", "--phone-number-id")
    assert cli(capsys, *add, SANDBOX_SENDER_ID, "--waba-id", SANDBOX_WABA_ID)[0] == 0
    assert cli(capsys, *add, "106540352242999")[0] == 0

    code, out, _ = cli(capsys, "templates", "sync", "--sender", SANDBOX_SENDER_ID)
    assert (code, out) == (0, f"WABA {SANDBOX_WABA_ID}: 4 templates, 3 approved\n")

    code, out, err = cli(capsys, "templates", "sync", "--sender", "106540352242999")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "has no WABA id" in err
    code, out, err = cli(capsys, "templates", "sync", "--sender", "999")
    assert (code, out, err) == (2, "", "wa-router: no sender '999' is registered\n")

    # A WABA the simulator does not know: reported, the others still synced, exit 1.
    assert cli(capsys, *add, "106540352242999", "--waba-id", "555")[0] == 0
    code, out, err = cli(capsys, "templates", "sync")
    assert code == 1
    assert out == f"WABA {SANDBOX_WABA_ID}: 4 templates, 3 approved\n"
    assert err.startswith("WABA 555: not synced: HTTP 400, code 100")
