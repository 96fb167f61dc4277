"""What the dispatcher tells operations: every Cloud API attempt counted by outcome and Meta
code, the accept latency, and a heartbeat that keeps beating while a slow batch is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from adapters.cloud_api.client import CloudApiClient, GraphHttp
from app.metrics import Metrics
from app.services.dispatch import Dispatcher
from domain.ports import SendResult
from domain.status import MessageStatus
from tests.fakes import Scripted, meta_error
from tests.service.conftest import POLICY, World

CALLS = "wa_router_cloud_api_calls_total"


@pytest.fixture
async def metered(world: World) -> AsyncIterator[tuple[Dispatcher, Metrics]]:
    metrics = Metrics()
    async with GraphHttp(transport=world.graph.transport(), base_url="https://graph.test") as http:
        dispatcher = Dispatcher(
            world.db,
            CloudApiClient(http, token="tok", version="v25.0"),
            clock=world.clock,
            policy=POLICY,
            rand=lambda: 1.0,
            metrics=metrics,
        )
        yield dispatcher, metrics


def calls(metrics: Metrics, outcome: str, code: str) -> float | None:
    return metrics.registry.get_sample_value(CALLS, {"outcome": outcome, "code": code})


async def test_every_attempt_is_counted_by_outcome_and_meta_code(
    world: World, metered: tuple[Dispatcher, Metrics]
) -> None:
    dispatcher, metrics = metered
    await world.open_window()
    await world.open_window("14155550000")
    await world.open_window("14155550001")
    retried = await world.send_text()
    world.graph.then(
        meta_error(503, 131016, "Service temporarily unavailable"), Scripted(kind="timeout")
    )
    await dispatcher.run_once()
    world.clock.advance(seconds=2)
    await dispatcher.run_once()
    world.clock.advance(seconds=30)  # the ambiguous timeout waits for a webhook first
    await dispatcher.run_once()
    assert (await world.message(retried.id)).status is MessageStatus.ACCEPTED

    undeliverable = await world.send_text(wa_id="14155550000")
    world.graph.then(meta_error(400, 131026, "Message undeliverable"))
    await dispatcher.run_once()
    assert (await world.message(undeliverable.id)).status is MessageStatus.FAILED

    await world.send_text(wa_id="14155550001")
    world.graph.then(meta_error(400, 368, "Temporarily blocked for policy violations"))
    await dispatcher.run_once()

    assert calls(metrics, "retry", "131016") == 1
    assert calls(metrics, "unknown", "none") == 1
    assert calls(metrics, "accepted", "none") == 1
    assert calls(metrics, "failed", "131026") == 1
    assert calls(metrics, "sender_paused", "368") == 1
    # Stored at 0 s, accepted by Meta after the 2 s backoff and the 30 s reconciliation wait.
    latency = "wa_router_accept_to_accepted_seconds"
    assert metrics.registry.get_sample_value(f"{latency}_count") == 1
    assert metrics.registry.get_sample_value(f"{latency}_sum") == 32.0


class StalledCloudApi:
    """A Cloud API that answers only when released (satisfies domain.ports.CloudApi)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def send(
        self, phone_number_id: str, payload: Mapping[str, Any], **_: object
    ) -> SendResult:
        self.called.set()
        await self.release.wait()
        return SendResult(wamid="wamid.SLOW")


async def test_the_heartbeat_keeps_beating_while_a_slow_batch_is_sent(world: World) -> None:
    stalled = StalledCloudApi()
    dispatcher = Dispatcher(world.db, stalled, clock=world.clock, heartbeat_every=0.01)
    await world.open_window()
    message = await world.send_text()
    sending = asyncio.create_task(dispatcher.run_once())
    await asyncio.wait_for(stalled.called.wait(), timeout=5)

    later = world.clock.advance(minutes=5)  # Meta has not answered for five minutes
    for _ in range(500):
        if dispatcher.heartbeat == later:
            break
        await asyncio.sleep(0.01)

    assert dispatcher.heartbeat == later
    assert not sending.done()
    stalled.release.set()
    assert await sending == 1
    assert (await world.message(message.id)).status is MessageStatus.ACCEPTED
