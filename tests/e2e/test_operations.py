"""Operations (API.md "Operations"): /readyz for the orchestrator, /metrics for Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from adapters.db.migrate import head_revision
from app.main import create_app
from app.runtime import Tuning, utc_now
from tests.asgi import client_for
from tests.e2e.conftest import CUSTOMER, OTHER_SENDER, SENDER, Router, router_settings
from tests.fakes import FakeClock, FakeGraph, meta_error

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def router_with(
    tmp_path: Path, *, clock: FakeClock | None = None, **settings: Any
) -> AsyncIterator[Router]:
    """A router on its own settings and clock (the `router` fixture has neither)."""
    graph = FakeGraph()
    tuning = Tuning(graph_transport=graph.transport(), idle_poll=0.02, clock=clock or utc_now)
    app = create_app(router_settings(tmp_path, **settings), tuning=tuning, configure_logs=False)
    async with client_for(app) as client:
        yield Router(client=client, graph=graph, services=app.state["services"])


async def scrape(router: Router) -> Samples:
    response = await router.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def eventually(
    probe: Callable[[], Any], until: Callable[[Any], bool], timeout: float = 5.0
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {result}")
        await asyncio.sleep(0.02)


# --- /readyz --------------------------------------------------------------------------------


async def test_readyz_answers_ready_without_a_key_when_every_check_passes(router: Router) -> None:
    response = await router.client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"] == {"ok": True}
    head = head_revision(router.services.db.url)
    assert checks["migrations"] == {"ok": True, "revision": head, "head": head}
    assert checks["dispatcher"]["ok"] is True
    assert checks["dispatcher"]["mode"] == "embedded"
    assert checks["dispatcher"]["age_seconds"] <= 60
    assert checks["senders"] == {"ok": True, "paused": []}


async def test_readyz_is_not_ready_while_the_schema_is_behind_the_code(router: Router) -> None:
    async with router.services.db.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))

    response = await router.client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "not_ready"
    assert problem["detail"] == "failed checks: migrations"
    assert problem["correlation_id"] == response.headers["x-correlation-id"]
    head = head_revision(router.services.db.url)
    assert problem["checks"]["migrations"] == {"ok": False, "revision": "0001", "head": head}
    assert problem["checks"]["database"] == {"ok": True}
    assert problem["checks"]["dispatcher"]["ok"] is True


async def test_readyz_stays_ready_when_a_newer_release_migrated_ahead(router: Router) -> None:
    async with router.services.db.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))

    response = await router.client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["migrations"]["revision"] == "9999_future"


async def test_readyz_is_not_ready_once_the_embedded_dispatcher_stops_beating(
    tmp_path: Path,
) -> None:
    clock = FakeClock(now=datetime.now(UTC))
    async with router_with(tmp_path, clock=clock) as router:
        assert (await router.client.get("/readyz")).status_code == 200
        dispatcher = router.services.dispatcher
        assert dispatcher is not None

        clock.advance(seconds=61)  # a live dispatcher beats again at once
        await eventually(lambda: router.client.get("/readyz"), lambda r: r.status_code == 200)

        dispatcher.stop()  # as if its loop had died
        await asyncio.sleep(0.1)
        clock.advance(seconds=61)
        response = await router.client.get("/readyz")

    assert response.status_code == 503
    problem = response.json()
    assert problem["code"] == "not_ready"
    assert problem["detail"] == "failed checks: dispatcher"
    assert problem["checks"]["dispatcher"]["ok"] is False
    assert problem["checks"]["dispatcher"]["mode"] == "embedded"
    assert problem["checks"]["dispatcher"]["age_seconds"] > 60
    assert problem["checks"]["migrations"]["ok"] is True


async def test_readyz_does_not_wait_for_a_dispatcher_that_runs_elsewhere(tmp_path: Path) -> None:
    async with router_with(tmp_path, worker="off") as router:
        response = await router.client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["dispatcher"] == {"ok": True, "mode": "off"}


async def test_readyz_lists_a_paused_sender_and_stays_ready(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    router.graph.then(meta_error(400, 368, "Temporarily blocked for policy violations"))

    assert (await router.send(headers, text="hello")).status_code == 202
    response = await eventually(
        lambda: router.client.get("/readyz"),
        lambda r: r.json().get("checks", {}).get("senders", {}).get("paused"),
    )

    assert response.status_code == 200
    [paused] = response.json()["checks"]["senders"]["paused"]
    assert paused["sender_id"] == SENDER
    assert paused["code"] == "368"
    assert "reason" not in paused
    assert datetime.fromisoformat(paused["paused_until"]) > datetime.now(UTC)
    samples = await scrape(router)
    assert value(samples, "wa_router_sender_paused", sender_id=SENDER) == 1


# --- /metrics -------------------------------------------------------------------------------


async def test_metrics_follow_a_message_from_send_to_delivered(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    sent = await router.send(headers, text="Your order has shipped")
    message = sent.json()
    wamid = (await router.wait_for(message["id"], headers, "accepted"))["wamid"]
    assert (await router.status(wamid, "delivered")).status_code == 200
    assert (await router.status(wamid, "sent")).status_code == 200  # late: never moves it back
    assert (await router.client.get("/no/such/route")).status_code == 404

    samples = await scrape(router)

    requests = "wa_router_http_requests_total"
    assert value(samples, requests, method="POST", route="/v1/whatsapp/messages", status="202")
    assert value(
        samples, requests, method="GET", route="/v1/whatsapp/messages/{message_id}", status="200"
    )
    assert value(samples, requests, method="POST", route="/v1/whatsapp/webhook", status="200") == 3
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    routes = {dict(labels)["route"] for name, labels in samples if name == requests}
    assert not any(message["id"] in route or "/no/such" in route for route in routes)

    calls = "wa_router_cloud_api_calls_total"
    assert value(samples, calls, outcome="accepted", code="none") == 1
    assert value(samples, "wa_router_accept_to_accepted_seconds_count") == 1
    assert value(samples, "wa_router_accepted_to_delivered_seconds_count") == 1

    events = "wa_router_webhook_events_total"
    assert value(samples, events, kind="inbound") == 1
    assert value(samples, events, kind="status_applied") == 1
    assert value(samples, events, kind="status_late") == 1
    assert value(samples, events, kind="duplicate") == 0


async def test_refused_sends_are_counted_by_problem_code(router: Router) -> None:
    await router.sender()
    headers = await router.key()

    outside = await router.send(headers, text="hello")
    invalid = await router.send(headers, text="")
    unknown = await router.client.get("/v1/whatsapp/messages/msg_unknown", headers=headers)

    assert outside.json()["code"] == "outside_service_window"
    assert invalid.json()["code"] == "validation_failed"
    assert unknown.status_code == 404
    samples = await scrape(router)
    refused = "wa_router_admissions_refused_total"
    assert value(samples, refused, code="outside_service_window") == 1
    assert value(samples, refused, code="validation_failed") == 1
    assert value(samples, refused, code="not_found") is None  # a read is not an admission


async def test_queue_depth_and_oldest_age_per_sender(tmp_path: Path) -> None:
    clock = FakeClock(now=datetime.now(UTC).replace(microsecond=0))
    async with router_with(tmp_path, clock=clock, worker="off") as router:
        await router.sender()
        await router.sender(OTHER_SENDER)
        headers = await router.key()
        await router.customer_writes(at=clock.now)
        await router.customer_writes("14155550000", at=clock.now)
        assert (await router.send(headers, sender_id=SENDER, text="first")).status_code == 202
        clock.advance(seconds=30)
        assert (
            await router.send(headers, sender_id=SENDER, to="+14155550000", text="second")
        ).status_code == 202
        clock.advance(seconds=60)

        samples = await scrape(router)

    assert value(samples, "wa_router_queue_depth", sender_id=SENDER) == 2
    assert value(samples, "wa_router_queue_oldest_age_seconds", sender_id=SENDER) == 90
    assert value(samples, "wa_router_queue_depth", sender_id=OTHER_SENDER) == 0
    assert value(samples, "wa_router_queue_oldest_age_seconds", sender_id=OTHER_SENDER) == 0
    assert CUSTOMER not in str(samples)  # recipients never become labels


async def test_unknown_methods_do_not_grow_the_request_metric(router: Router) -> None:
    for method in ("FOO123", "BAR456", "GET"):
        await router.client.request(method, "/v1/no-such-route")

    samples = await scrape(router)

    methods = {
        dict(labels)["method"]
        for (name, labels) in samples
        if name == "wa_router_http_requests_total"
    }
    assert "FOO123" not in methods
    assert (
        value(
            samples,
            "wa_router_http_requests_total",
            method="other",
            route="unmatched",
            status="405",
        )
        is not None
        or value(
            samples,
            "wa_router_http_requests_total",
            method="other",
            route="unmatched",
            status="404",
        )
        is not None
    )
