"""The support trace: GET /v1/support/correlations/{id} and `wa-router trace` (API.md)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.cli import main
from domain.model import ApiKey, Scope
from tests.e2e.conftest import APP_SECRET, CUSTOMER, SENDER, Router
from tests.e2e.test_bad_input import assert_problem
from tests.fakes import meta_error

TRACE = "/v1/support/correlations/"
#: 200 characters whose first 80 must not be enough to rebuild it.
LONG_TEXT = "".join(f"line {n:03d} of the order update; " for n in range(10))[:200]
SEND = (Scope.MESSAGES_SEND, Scope.MESSAGES_READ)


async def key_of(router: Router, headers: dict[str, str]) -> ApiKey:
    key = await router.services.keys.authenticate(headers["Authorization"].removeprefix("Bearer "))
    assert key is not None
    return key


def rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def assert_time_ordered(events: list[dict[str, Any]]) -> None:
    """Non-decreasing at the whole seconds of Meta's timestamps (the order within a second is
    the order of recording)."""
    seconds = [
        datetime.fromisoformat(e["at"].replace("Z", "+00:00")).replace(microsecond=0)
        for e in events
    ]
    assert seconds == sorted(seconds), seconds


@pytest.fixture
async def support(router: Router) -> dict[str, str]:
    """Support staff: another client, with support:read only."""
    return await router.key(client="support-desk", scopes=[Scope.SUPPORT_READ])


async def delivered_flow(router: Router) -> tuple[str, str, dict[str, str], datetime]:
    """send → accepted → delivered webhook → a late `sent` webhook; returns the correlation id,
    the message id, the sender's headers and when the customer wrote."""
    await router.sender()
    crm = await router.key(client="crm", scopes=SEND)
    wrote = datetime.fromtimestamp(int((datetime.now(UTC) - timedelta(hours=2)).timestamp()), UTC)
    await router.customer_writes(at=wrote)
    response = await router.send({**crm, "X-Correlation-Id": "crm-ticket-991"}, text=LONG_TEXT)
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    wamid = (await router.wait_for(message_id, crm, "accepted"))["wamid"]
    assert (await router.status(wamid, "delivered")).status_code == 200
    await router.wait_for(message_id, crm, "delivered")
    assert (await router.status(wamid, "sent")).status_code == 200  # late: kept, not applied
    return "crm-ticket-991", message_id, crm, wrote


async def test_trace_of_a_delivered_message_tells_the_whole_story(
    router: Router, support: dict[str, str]
) -> None:
    correlation_id, message_id, crm, wrote = await delivered_flow(router)
    key = await key_of(router, crm)

    response = await router.client.get(TRACE + correlation_id, headers=support)

    assert response.status_code == 200, response.text
    assert "x-ratelimit-remaining" in response.headers
    trace = response.json()
    assert trace["correlation_id"] == correlation_id
    assert trace["truncated"] is False
    events = trace["events"]
    assert [(e["kind"], e["detail"].get("status")) for e in events] == [
        ("request", None),
        ("status", "queued"),
        ("attempt", None),
        ("status", "accepted"),
        ("status", "delivered"),
        ("status", "sent"),
    ]
    assert {e["message_id"] for e in events} == {message_id}
    assert_time_ordered(events)

    request, queued, attempt, accepted, delivered, late = events
    assert request["detail"] == {
        "route": "POST /v1/whatsapp/messages",
        "status_code": 202,
        "client_id": key.client_id,
        "client_name": "crm",
        "key_id": key.id,
        "kind": "text",
        "summary": LONG_TEXT[:79] + "…",
        "sender_id": SENDER,
        "to": CUSTOMER,
        "window": {"open": True, "last_inbound_at": rfc3339(wrote)},
    }
    assert queued["detail"] == {"status": "queued", "applied": True, "source": "router"}
    assert attempt["detail"]["outcome"] == "accepted"
    assert attempt["detail"]["http_status"] == 200
    assert isinstance(attempt["detail"]["latency_ms"], int | float)
    assert attempt["detail"]["latency_ms"] >= 0
    wamid = attempt["detail"]["wamid"]
    assert accepted["detail"] == {
        "status": "accepted",
        "applied": True,
        "source": "cloud_api",
        "wamid": wamid,
    }
    assert delivered["detail"] == {"status": "delivered", "applied": True, "source": "webhook"}
    assert late["detail"]["applied"] is False


async def test_trace_never_shows_the_text_whole_nor_secrets(
    router: Router, support: dict[str, str]
) -> None:
    correlation_id, _, crm, _ = await delivered_flow(router)

    response = await router.client.get(TRACE + correlation_id, headers=support)

    assert LONG_TEXT not in response.text
    assert LONG_TEXT[:80] not in response.text
    assert LONG_TEXT[:79] in response.text  # the summary, as stored
    assert all(len(s) <= 80 for s in strings(response.json()["events"]))
    for secret in (
        crm["Authorization"].removeprefix("Bearer "),
        support["Authorization"].removeprefix("Bearer "),
        "test-token",
        APP_SECRET,
    ):
        assert secret not in response.text


async def test_trace_of_a_refused_request_shows_the_window_decision(
    router: Router, support: dict[str, str]
) -> None:
    await router.sender()
    crm = await router.key(client="crm", scopes=SEND)
    key = await key_of(router, crm)
    wrote = datetime.fromtimestamp(int((datetime.now(UTC) - timedelta(hours=30)).timestamp()), UTC)
    await router.customer_writes(at=wrote)
    refused = await router.send({**crm, "X-Correlation-Id": "crm-late-1"}, text=LONG_TEXT)
    assert_problem(refused, 422, "outside_service_window")

    response = await router.client.get(TRACE + "crm-late-1", headers=support)

    assert response.status_code == 200, response.text
    [event] = response.json()["events"]
    assert event["kind"] == "request"
    assert event["message_id"] is None
    assert event["detail"] == {
        "route": "POST /v1/whatsapp/messages",
        "status_code": 422,
        "code": "outside_service_window",
        "client_id": key.client_id,
        "client_name": "crm",
        "key_id": key.id,
        "kind": "text",
        "summary": LONG_TEXT[:79] + "…",
        "window": {
            "open": False,
            "last_inbound_at": rfc3339(wrote),
            "window_closed_at": rfc3339(wrote + timedelta(hours=24)),
        },
    }
    assert LONG_TEXT not in response.text


async def test_trace_shows_metas_error_code_and_fbtrace_id(
    router: Router, support: dict[str, str]
) -> None:
    await router.sender()
    crm = await router.key(client="crm", scopes=SEND)
    await router.customer_writes()
    router.graph.then(meta_error(400, 131026, "Message undeliverable"))
    response = await router.send({**crm, "X-Correlation-Id": "crm-fails-1"}, text="hello")
    await router.wait_for(response.json()["id"], crm, "failed")

    events = (await router.client.get(TRACE + "crm-fails-1", headers=support)).json()["events"]

    [attempt] = [e for e in events if e["kind"] == "attempt"]
    assert attempt["detail"]["http_status"] == 400
    assert attempt["detail"]["code"] == 131026
    assert attempt["detail"]["fbtrace_id"] == "FAKETRACE1"
    assert attempt["detail"]["outcome"] == "failed"
    assert "latency_ms" in attempt["detail"]
    assert events[-1]["detail"] == {
        "status": "failed",
        "applied": True,
        "source": "cloud_api",
        "code": 131026,
    }


async def test_template_requests_have_no_window_decision(
    router: Router, support: dict[str, str]
) -> None:
    await router.sender()
    crm = await router.key(client="crm", scopes=[Scope.TEMPLATES_SEND])
    sent = await router.client.post(
        "/v1/whatsapp/templates",
        json={"to": "+" + CUSTOMER, "template": {"name": "order_shipped", "language": "en_US"}},
        headers={**crm, "X-Correlation-Id": "crm-template-1"},
    )
    assert sent.status_code == 202, sent.text

    events = (await router.client.get(TRACE + "crm-template-1", headers=support)).json()["events"]

    assert events[0]["detail"]["kind"] == "template"
    assert events[0]["detail"]["summary"] == "[template order_shipped/en_US]"
    assert events[0]["detail"]["window"] is None


async def test_unknown_correlation_is_404(router: Router, support: dict[str, str]) -> None:
    for unknown in ("req_nothing_here", "x" * 300, "nul%00byte", "caf%C3%A9"):
        assert_problem(await router.client.get(TRACE + unknown, headers=support), 404, "not_found")


async def test_any_clients_story_is_traceable_only_with_support_read(
    router: Router, support: dict[str, str]
) -> None:
    correlation_id, _, crm, _ = await delivered_flow(router)
    erp = await router.key(client="erp", scopes=[Scope.MESSAGES_READ])

    assert_problem(
        await router.client.get(TRACE + correlation_id, headers=erp), 403, "insufficient_scope"
    )
    assert_problem(
        await router.client.get(TRACE + correlation_id, headers=crm), 403, "insufficient_scope"
    )
    assert_problem(await router.client.get(TRACE + correlation_id), 401, "invalid_api_key")
    assert (await router.client.get(TRACE + correlation_id, headers=support)).status_code == 200


# --- wa-router trace ---------------------------------------------------------------------------


@pytest.fixture
def cli_database(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads the router fixture's own database."""
    for name in ("ACCESS_TOKEN", "APP_SECRET", "WORKER", "PORT", "HOST"):
        monkeypatch.delenv("WA_ROUTER_" + name, raising=False)
    monkeypatch.setenv("WA_ROUTER_DATABASE_URL", router.services.db.url)


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))  # main() runs its own event loop
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("cli_database")
async def test_cli_trace_json_is_the_routes_json(
    router: Router, support: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    correlation_id, _, _, _ = await delivered_flow(router)
    served = (await router.client.get(TRACE + correlation_id, headers=support)).json()

    code, out, err = await run_cli(capsys, "trace", correlation_id, "--json")

    assert code == 0, err
    assert json.loads(out) == served


@pytest.mark.usefixtures("cli_database")
async def test_cli_trace_prints_one_line_per_event(
    router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    correlation_id, message_id, _, _ = await delivered_flow(router)

    code, out, _ = await run_cli(capsys, "trace", correlation_id)

    assert code == 0
    header, *lines = out.strip().splitlines()
    assert header.split() == ["AT", "KIND", "MESSAGE", "DETAIL"]
    assert [line.split()[1] for line in lines] == [
        "request",
        "status",
        "attempt",
        "status",
        "status",
        "status",
    ]
    assert all(line.split()[2] == message_id for line in lines)
    assert "POST /v1/whatsapp/messages -> 202" in lines[0]
    assert "client=crm" in lines[0]
    assert "window=open" in lines[0]
    assert "latency=" in lines[2]
    assert "http=200" in lines[2]
    assert "delivered (webhook)" in lines[4]
    assert "sent (webhook, late: not applied)" in lines[5]
    assert LONG_TEXT not in out


@pytest.mark.usefixtures("cli_database")
async def test_cli_trace_of_an_unknown_id_exits_2_with_one_line(
    router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    await router.sender()

    code, out, err = await run_cli(capsys, "trace", "req_nothing_here")

    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("wa-router: ")
    assert "req_nothing_here" in err


async def test_the_new_routes_are_documented(router: Router) -> None:
    paths = (await router.client.get("/schema/openapi.json")).json()["paths"]

    listing = paths["/v1/whatsapp/messages"]["get"]
    window = paths["/v1/whatsapp/contacts/{to}/window"]["get"]
    trace = paths["/v1/support/correlations/{correlation_id}"]["get"]
    assert listing["operationId"] == "listMessages"
    assert window["operationId"] == "getContactWindow"
    assert trace["operationId"] == "getCorrelationTrace"
    assert {"200", "401", "403", "422", "429"} <= set(listing["responses"])
    assert {"200", "401", "403", "422", "429"} <= set(window["responses"])
    assert {"200", "401", "403", "404", "429"} <= set(trace["responses"])
    assert {p["name"] for p in listing["parameters"]} == {
        "correlation_id",
        "status",
        "to",
        "sender_id",
        "limit",
        "cursor",
    }
