"""The real server process, a fake Graph API process, loopback only."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.cloud_api.sandbox import inbound_text_webhook, new_wamid, status_webhook
from adapters.cloud_api.webhooks import sign
from tests.e2e.processes import (
    APP_SECRET,
    FakeGraphProcess,
    RouterProcess,
    fake_graph,
    free_port,
    router_process,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]

SENDER = "106540352242922"
CUSTOMER = "14155552671"


@pytest.fixture
def graph() -> Iterator[FakeGraphProcess]:
    with fake_graph() as process:
        yield process


@pytest.fixture
def router(tmp_path: Path, graph: FakeGraphProcess) -> Iterator[RouterProcess]:
    with router_process(tmp_path, graph) as process:
        process.cli("senders", "add", "--phone-number-id", SENDER, "--name", "Test")
        process.start()
        yield process


def webhook(router: RouterProcess, body: bytes) -> httpx.Response:
    return httpx.post(
        router.url + "/v1/whatsapp/webhook",
        content=body,
        timeout=10,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP_SECRET)},
    )


def customer_writes(router: RouterProcess, *wa_ids: str) -> None:
    for wa_id in wa_ids or (CUSTOMER,):
        body = inbound_text_webhook(
            phone_number_id=SENDER,
            wa_id=wa_id,
            wamid=new_wamid(),
            text="hi",
            at=datetime.now(UTC),
        )
        assert webhook(router, body).status_code == 200


def customers(count: int) -> list[str]:
    return [f"1415555{n:04d}" for n in range(count)]


def wait_status(
    router: RouterProcess,
    message_id: str,
    headers: dict[str, str],
    status: str,
    timeout: float = 15.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = httpx.get(
            f"{router.url}/v1/whatsapp/messages/{message_id}", headers=headers, timeout=5
        ).json()
        if body["status"] == status or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_a_message_travels_to_read_through_real_processes(
    router: RouterProcess, graph: FakeGraphProcess
) -> None:
    headers = router.key()
    customer_writes(router)

    response = httpx.post(
        router.url + "/v1/whatsapp/messages",
        headers=headers,
        timeout=10,
        json={"to": "+1 415 555 2671", "text": "Your order has shipped"},
    )

    assert response.status_code == 202
    message = response.json()
    accepted = wait_status(router, message["id"], headers, "accepted")
    assert accepted["status"] == "accepted"
    [received] = graph.requests()
    assert received["path"] == f"/v25.0/{SENDER}/messages"
    assert received["authorization"] == "Bearer process-token"
    assert received["body"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+" + CUSTOMER,
        "biz_opaque_callback_data": message["id"],
        "type": "text",
        "text": {"preview_url": False, "body": "Your order has shipped"},
    }
    for status in ("sent", "delivered", "read"):
        body = status_webhook(
            phone_number_id=SENDER,
            wamid=accepted["wamid"],
            status=status,
            wa_id=CUSTOMER,
            at=datetime.now(UTC),
            callback_data=message["id"],
        )
        assert webhook(router, body).status_code == 200
    final = wait_status(router, message["id"], headers, "read")
    assert [h["status"] for h in final["history"]] == [
        "queued",
        "accepted",
        "sent",
        "delivered",
        "read",
    ]


def test_closed_window_is_refused_and_meta_hears_nothing(
    router: RouterProcess, graph: FakeGraphProcess
) -> None:
    headers = router.key()

    response = httpx.post(
        router.url + "/v1/whatsapp/messages",
        headers=headers,
        timeout=10,
        json={"to": "+14155552671", "text": "hello"},
    )

    assert response.status_code == 422
    assert response.json()["code"] == "outside_service_window"
    time.sleep(0.5)
    assert graph.requests() == []


def test_scripted_131047_ends_failed_with_that_code(
    router: RouterProcess, graph: FakeGraphProcess
) -> None:
    headers = router.key()
    customer_writes(router)
    graph.script(
        [{"kind": "error", "http_status": 400, "code": 131047, "title": "Re-engagement message"}]
    )

    message = httpx.post(
        router.url + "/v1/whatsapp/messages",
        headers=headers,
        timeout=10,
        json={"to": "+14155552671", "text": "hello"},
    ).json()

    failed = wait_status(router, message["id"], headers, "failed")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == 131047
    assert failed["error"]["source"] == "cloud_api"


def test_two_500s_then_success_ends_accepted_after_three_attempts(
    router: RouterProcess, graph: FakeGraphProcess
) -> None:
    headers = router.key()
    customer_writes(router)
    graph.script(
        [
            {"kind": "error", "http_status": 500, "code": 131000},
            {"kind": "error", "http_status": 500, "code": 131000},
        ]
    )

    message = httpx.post(
        router.url + "/v1/whatsapp/messages",
        headers=headers,
        timeout=10,
        json={"to": "+14155552671", "text": "hello"},
    ).json()

    accepted = wait_status(router, message["id"], headers, "accepted", timeout=30)
    assert accepted["status"] == "accepted"
    assert accepted["attempts"] == 3


async def _send_batch(router: RouterProcess, headers: dict[str, str], to: list[str]) -> list[str]:
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(
        base_url=router.url, headers=headers, timeout=30, limits=limits
    ) as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/whatsapp/messages", json={"to": "+" + wa_id, "text": f"#{i}"})
                for i, wa_id in enumerate(to)
            )
        )
    assert [r.status_code for r in responses] == [202] * len(to)
    return [r.json()["id"] for r in responses]


def test_kill_9_right_after_a_batch_of_202s_loses_nothing(
    router: RouterProcess, graph: FakeGraphProcess, tmp_path: Path
) -> None:
    headers = router.key()
    to = customers(60)
    customer_writes(router, *to)
    router.cli("senders", "add", "--phone-number-id", SENDER, "--max-mps", "10")
    graph.script(delay=0.5)  # a slow Meta, a slow sender: most are still queued at the kill

    ids = asyncio.run(_send_batch(router, headers, to))
    router.kill_9()
    with sqlite3.connect(tmp_path / "router.db") as db:
        on_disk = {row[0] for row in db.execute("SELECT id FROM messages")}
    assert set(ids) <= on_disk  # every 202 was on disk when the process died
    sent_before = {r["body"]["biz_opaque_callback_data"] for r in graph.requests()}
    graph.script(delay=0.0)
    router.start()

    statuses = {wait_status(router, i, headers, "accepted", timeout=30)["status"] for i in ids}
    received = [r["body"]["biz_opaque_callback_data"] for r in graph.requests()]
    duplicates = len(received) - len(set(received))
    print(
        f"\nkill -9 after 60 x 202: {len(sent_before)} reached the fake before the kill, "
        f"{len(set(received))} distinct after restart, {duplicates} sent twice "
        "(only those in flight at the kill may be)"
    )
    assert statuses == {"accepted"}
    assert set(ids) <= set(received)
    assert duplicates <= len(sent_before)


def test_a_separate_worker_process_dispatches_when_the_server_does_not(
    tmp_path: Path, graph: FakeGraphProcess
) -> None:
    with router_process(tmp_path, graph) as router:
        router.env["WA_ROUTER_WORKER"] = "off"
        router.cli("senders", "add", "--phone-number-id", SENDER)
        headers = router.key()
        router.start()
        customer_writes(router)
        message = httpx.post(
            router.url + "/v1/whatsapp/messages",
            headers=headers,
            timeout=10,
            json={"to": "+14155552671", "text": "hello"},
        ).json()
        time.sleep(1.0)
        assert (
            wait_status(router, message["id"], headers, "accepted", timeout=0)["status"] == "queued"
        )  # nobody dispatches yet

        metrics_port = free_port()
        worker = router.start_worker("--metrics-port", str(metrics_port))
        accepted = wait_status(router, message["id"], headers, "accepted")

        assert accepted["status"] == "accepted"
        assert len(graph.requests()) == 1
        # The Cloud API calls are counted where they are made: in the worker (just after the
        # status the poll saw is committed).
        counted = 'wa_router_cloud_api_calls_total{code="none",outcome="accepted"} 1.0'
        deadline = time.monotonic() + 10
        scraped = ""
        while counted not in scraped and time.monotonic() < deadline:
            scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            time.sleep(0.05)
        assert counted in scraped
        assert "wa_router_accept_to_accepted_seconds_count 1.0" in scraped
        worker.terminate()
        assert worker.wait(timeout=20) == 0  # SIGTERM stops it cleanly
        with pytest.raises(httpx.ConnectError):  # and its metrics server with it
            httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert "Traceback" not in router.log.read_text()


def test_behind_a_proxy_failed_authentications_are_limited_per_forwarded_client(
    router: RouterProcess,
) -> None:
    """Behind a reverse proxy every connection comes from the proxy. The server takes the
    client's address from X-Forwarded-For when the proxy is trusted (uvicorn's
    FORWARDED_ALLOW_IPS, loopback by default), so one client guessing keys is refused without
    locking out the others that share the proxy."""
    wrong = {"Authorization": "Bearer wrk_not-a-key"}
    good = router.key("messages:read")
    with httpx.Client(base_url=router.url, timeout=10) as http:

        def list_as(client: str, auth: dict[str, str]) -> int:
            headers = {**auth, "X-Forwarded-For": client}
            return http.get("/v1/whatsapp/messages", headers=headers).status_code

        guesses = [list_as("203.0.113.7", wrong) for _ in range(40)]
        assert guesses[0] == 401
        assert guesses[-1] == 429  # this client is limited...
        assert list_as("203.0.113.8", wrong) == 401  # ...another one behind the proxy is not
        assert list_as("203.0.113.8", good) == 200
        assert list_as("203.0.113.7", good) == 429  # the guessing client waits, key or not
