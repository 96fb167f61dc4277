"""The dispatcher at Meta's limits: per-sender pace, per-pair back-off, throttling."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adapters.cloud_api.client import CloudApiClient, GraphHttp
from adapters.db import keys as key_repo
from app.services.dispatch import PACE_WINDOW_SECONDS, Dispatcher
from domain.model import Sender
from domain.status import MessageStatus
from tests.fakes import meta_error
from tests.service.conftest import POLICY, SENDER, World


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    return max(
        (sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times)), default=0
    )


async def run_for(dispatcher: Dispatcher, seconds: float) -> None:
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(seconds)
    dispatcher.stop()
    await asyncio.wait_for(task, timeout=10)


async def _timed_world(world: World, max_mps: int) -> tuple[Dispatcher, list[float]]:
    """A dispatcher over a Graph fake that notes when each send arrived (real time)."""
    arrivals: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(time.monotonic())
        return world.graph.handler(request)

    async with world.db.write() as conn:
        await key_repo.upsert_sender(
            conn, Sender(phone_number_id=SENDER, max_mps=max_mps), now=world.clock.now
        )
    client = GraphHttp(transport=httpx.MockTransport(handler), base_url="https://graph.test")
    cloud = CloudApiClient(client, token="tok", version="v25.0")
    return Dispatcher(
        world.db, cloud, clock=world.clock, policy=POLICY, idle_poll=0.05, rand=lambda: 1.0
    ), arrivals


@pytest.mark.timing
async def test_a_sender_never_exceeds_its_max_mps_in_any_second(world: World) -> None:
    dispatcher, arrivals = await _timed_world(world, max_mps=5)
    contacts = [f"1415555{n:04d}" for n in range(20)]
    for wa_id in contacts:
        await world.open_window(wa_id)
        await world.send_text(wa_id=wa_id)

    await run_for(dispatcher, 2.5)

    print(
        f"\nsent {len(arrivals)} in 2.5 s at max_mps 5; busiest second: "
        f"{max_in_any_second(arrivals)}"
    )
    assert max_in_any_second(arrivals) <= 5
    assert len(arrivals) > 5  # the window slides: sends go on after the first full second


@pytest.mark.timing
async def test_130429_halves_the_senders_pace_for_a_while(world: World) -> None:
    dispatcher, arrivals = await _timed_world(world, max_mps=6)
    world.graph.then(meta_error(400, 130429, "Rate limit hit"))
    for n in range(30):
        wa_id = f"1415556{n:04d}"
        await world.open_window(wa_id)
        await world.send_text(wa_id=wa_id)

    await run_for(dispatcher, 3.2)

    after_throttle = [t for t in arrivals if t >= arrivals[0] + 1.05]
    print(f"\nafter 130429: busiest second {max_in_any_second(after_throttle)} (max_mps 6)")
    assert max_in_any_second(after_throttle) <= 3


async def test_131056_backs_off_that_conversation_only(world: World) -> None:
    pair, other = "14155550001", "14155550002"
    await world.open_window(pair)
    await world.open_window(other)
    first = await world.send_text("first", wa_id=pair)
    second = await world.send_text("second", wa_id=pair)
    elsewhere = await world.send_text("elsewhere", wa_id=other)
    world.graph.then(meta_error(400, 131056, "Pair rate limit hit"))

    await world.dispatcher.run_once()

    assert (await world.message(first.id)).status is MessageStatus.QUEUED
    assert (await world.message(second.id)).status is MessageStatus.QUEUED  # waits in order
    assert (await world.message(elsewhere.id)).status is MessageStatus.ACCEPTED
    assert await world.dispatcher.run_once() == 0  # the pair backs off 4^0 = 1 s
    world.clock.advance(seconds=1)
    await world.dispatcher.run_once()
    assert (await world.message(first.id)).status is MessageStatus.ACCEPTED
    assert await world.dispatcher.run_once() == 0  # after a 131056 the burst is spent:
    world.clock.advance(seconds=6)  # the pair is held to one message per 6 s
    await world.dispatcher.run_once()
    assert (await world.message(second.id)).status is MessageStatus.ACCEPTED
    sent_to_pair = [
        r.body["biz_opaque_callback_data"]
        for r in world.graph.requests
        if r.body["to"] == "+" + pair
    ]
    assert sent_to_pair == [first.id, first.id, second.id]


async def test_dispatchers_share_the_senders_fairly_and_never_overlap(world: World) -> None:
    senders = [f"10654035224{n:04d}" for n in range(10)]
    async with world.db.write() as conn:
        for sender_id in senders:
            await key_repo.upsert_sender(
                conn, Sender(phone_number_id=sender_id), now=world.clock.now
            )
    for sender_id in senders:
        for _ in range(4):  # one conversation each: one message per pass, in order
            await world.send_to(sender_id, "14155550001")
    first, second = (
        Dispatcher(world.db, world.cloud, clock=world.clock, policy=POLICY, owner=name)
        for name in ("first", "second")
    )

    await first.run_once()
    assert first.senders == frozenset(senders)  # alone: it takes them all
    await second.run_once()
    assert second.senders == frozenset()  # nothing free yet
    await first.run_once()  # sees two dispatchers: gives back its idle half …
    await second.run_once()
    assert second.senders == frozenset()  # … free once a pace window has passed
    world.clock.advance(seconds=PACE_WINDOW_SECONDS)
    await second.run_once()

    assert len(first.senders) == len(second.senders) == 5
    assert first.senders.isdisjoint(second.senders)
