"""The sandbox simulator of the Cloud API: its own window check, wamids, and signed webhooks
delivered back like Meta's (cloud-api.md §3, §4.2, §4.4, §4.6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from adapters.cloud_api.errors import CloudApiStatusError
from adapters.cloud_api.payloads import message_payload
from adapters.cloud_api.sandbox import SANDBOX_APP_SECRET, SandboxCloudApi
from adapters.cloud_api.webhooks import WebhookPayload, decoder, meta_time, signature_valid
from domain.content import Template, Text
from tests.fakes import FakeClock

PNID = "100000000000001"
WA_ID = "16505551234"
SECRET = "sandbox-test-secret"
REF = "msg_01JDQ8Z5W3K9Y2X7V6T4R1P0NM"
TIMEOUT = 2.0


@dataclass
class Router:
    """Stands in for our webhook route: what the simulator delivered, and the inbound times
    the simulator asks about."""

    delivered: asyncio.Queue[tuple[bytes, str]] = field(default_factory=asyncio.Queue)
    last_inbound_at: dict[tuple[str, str], datetime] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)
    failures: int = 0

    async def deliver(self, body: bytes, signature: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the router is down")
        await self.delivered.put((body, signature))

    async def last_inbound(self, phone_number_id: str, wa_id: str) -> datetime | None:
        self.asked.append((phone_number_id, wa_id))
        return self.last_inbound_at.get((phone_number_id, wa_id))

    async def next_webhook(self) -> WebhookPayload:
        body, signature = await asyncio.wait_for(self.delivered.get(), TIMEOUT)
        assert signature_valid(body, signature, SECRET)
        assert not signature_valid(body, signature, SANDBOX_APP_SECRET)
        return decoder.decode(body)


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_sandbox(
    router: Router, clock: FakeClock
) -> AsyncIterator[Callable[..., SandboxCloudApi]]:
    made: list[SandboxCloudApi] = []

    def make(delays: tuple[float, float, float] = (0.01, 0.02, 0.03)) -> SandboxCloudApi:
        sandbox = SandboxCloudApi(
            deliver=router.deliver,
            last_inbound=router.last_inbound,
            clock=clock,
            app_secret=SECRET,
            delays=delays,
        )
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        await sandbox.aclose()


def text_payload(callback_data: str = REF) -> dict[str, Any]:
    return message_payload(
        Text(body="Your order shipped"), wa_id=WA_ID, reply_to=None, callback_data=callback_data
    )


async def test_free_form_outside_the_window_is_refused_with_131047(
    router: Router, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    sandbox = make_sandbox()

    with pytest.raises(CloudApiStatusError) as caught:
        await sandbox.send(PNID, text_payload())

    error = caught.value
    assert (error.http_status, error.code, error.title) == (400, 131047, "Re-engagement message")
    assert error.details is not None
    assert error.fbtrace_id is not None
    assert router.asked == [(PNID, WA_ID)]
    await asyncio.sleep(0.05)
    assert router.delivered.empty()


async def test_the_window_closes_at_exactly_24_hours(
    router: Router, clock: FakeClock, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    sandbox = make_sandbox()
    router.last_inbound_at[PNID, WA_ID] = clock.now - timedelta(hours=24)

    with pytest.raises(CloudApiStatusError) as caught:
        await sandbox.send(PNID, text_payload())
    assert caught.value.code == 131047

    router.last_inbound_at[PNID, WA_ID] = clock.now - timedelta(hours=24) + timedelta(seconds=1)
    result = await sandbox.send(PNID, text_payload())
    assert result.wamid.startswith("wamid.")


async def test_free_form_inside_the_window_is_sent_delivered_and_read(
    router: Router, clock: FakeClock, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    sandbox = make_sandbox()
    router.last_inbound_at[PNID, WA_ID] = clock.now - timedelta(hours=1)

    result = await sandbox.send(PNID, text_payload())

    assert result.wamid.startswith("wamid.")
    assert (result.wa_id, result.message_status) == (WA_ID, "accepted")
    reports = [await router.next_webhook() for _ in range(3)]
    statuses = []
    for payload in reports:
        assert payload.object == "whatsapp_business_account"
        [entry] = payload.entry
        [change] = entry.changes
        assert change.field == "messages"
        assert change.value is not None
        assert change.value.metadata is not None
        assert change.value.metadata.phone_number_id == PNID
        [status] = change.value.statuses
        assert status.id == result.wamid
        assert status.recipient_id == WA_ID
        assert status.biz_opaque_callback_data == REF
        assert meta_time(status.timestamp) == clock.now.replace(microsecond=0)
        statuses.append(status.status)
    assert statuses == ["sent", "delivered", "read"]
    await asyncio.sleep(0.05)
    assert router.delivered.empty()


async def test_each_send_gets_its_own_wamid(
    router: Router, clock: FakeClock, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    sandbox = make_sandbox(delays=(60.0, 61.0, 62.0))
    router.last_inbound_at[PNID, WA_ID] = clock.now - timedelta(minutes=5)

    wamids = {(await sandbox.send(PNID, text_payload(f"msg_{n}"))).wamid for n in range(20)}

    assert len(wamids) == 20


async def test_status_webhooks_without_callback_data(
    router: Router, clock: FakeClock, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    sandbox = make_sandbox()
    router.last_inbound_at[PNID, WA_ID] = clock.now - timedelta(minutes=5)
    payload = text_payload()
    del payload["biz_opaque_callback_data"]

    await sandbox.send(PNID, payload)

    body, _ = await asyncio.wait_for(router.delivered.get(), TIMEOUT)
    status = msgspec.json.decode(body)["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert "biz_opaque_callback_data" not in status


async def test_templates_are_never_window_checked(
    router: Router, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    sandbox = make_sandbox()
    payload = message_payload(
        Template(name="order_update", language="en_US"),
        wa_id=WA_ID,
        reply_to=None,
        callback_data=REF,
    )

    result = await sandbox.send(PNID, payload)

    assert result.wamid.startswith("wamid.")
    assert router.asked == []
    first = await router.next_webhook()
    value = first.entry[0].changes[0].value
    assert value is not None
    assert [(s.id, s.status) for s in value.statuses] == [(result.wamid, "sent")]


async def test_a_lost_report_does_not_break_the_simulator(
    router: Router, clock: FakeClock, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    sandbox = make_sandbox()
    router.last_inbound_at[PNID, WA_ID] = clock.now - timedelta(minutes=5)
    router.failures = 1

    await sandbox.send(PNID, text_payload("msg_lost"))
    await asyncio.sleep(0.06)  # the whole report of the first message was given up
    assert router.delivered.empty()

    second = await sandbox.send(PNID, text_payload("msg_ok"))
    reports = [await router.next_webhook() for _ in range(3)]
    ids = [
        status.id
        for payload in reports
        for entry in payload.entry
        for change in entry.changes
        if change.value is not None
        for status in change.value.statuses
    ]
    assert ids == [second.wamid] * 3


async def test_aclose_cancels_pending_reports(
    router: Router, clock: FakeClock, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    sandbox = make_sandbox(delays=(0.05, 0.06, 0.07))
    router.last_inbound_at[PNID, WA_ID] = clock.now - timedelta(minutes=5)
    await sandbox.send(PNID, text_payload())

    await sandbox.aclose()
    await asyncio.sleep(0.1)

    assert router.delivered.empty()


async def test_customer_writes_delivers_a_signed_inbound_webhook(
    router: Router, clock: FakeClock, make_sandbox: Callable[..., SandboxCloudApi]
) -> None:
    clock.now = clock.now.replace(microsecond=654321)
    sandbox = make_sandbox()

    wamid, at = await sandbox.customer_writes(phone_number_id=PNID, wa_id=WA_ID, text="Hello!")

    assert wamid.startswith("wamid.")
    assert at == clock.now.replace(microsecond=0)
    assert at.utcoffset() == timedelta(0)
    body, signature = await asyncio.wait_for(router.delivered.get(), TIMEOUT)
    assert signature_valid(body, signature, SECRET)
    payload = decoder.decode(body)
    value = payload.entry[0].changes[0].value
    assert value is not None
    assert value.metadata is not None
    assert value.metadata.phone_number_id == PNID
    assert [c.wa_id for c in value.contacts] == [WA_ID]
    [message] = value.messages
    assert (message.id, message.from_, message.type) == (wamid, WA_ID, "text")
    assert meta_time(message.timestamp) == at
    raw = msgspec.json.decode(body)["entry"][0]["changes"][0]["value"]["messages"][0]
    assert raw["text"] == {"body": "Hello!"}
