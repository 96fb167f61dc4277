"""The dispatcher's decisions, on a clock we move by hand."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from adapters.db import contacts as contact_repo
from adapters.db import keys as key_repo
from adapters.db import outbox
from app.services.dispatch import PACE_WINDOW_SECONDS, Dispatcher
from domain.status import MessageStatus
from tests.fakes import Scripted, meta_error
from tests.service.conftest import CUSTOMER, POLICY, SENDER, World


async def test_a_queued_message_is_sent_once_and_accepted(world: World) -> None:
    await world.open_window()
    message = await world.send_text()

    assert await world.dispatcher.run_once() == 1
    assert await world.dispatcher.run_once() == 0

    stored = await world.message(message.id)
    assert stored.status is MessageStatus.ACCEPTED
    assert stored.wamid == "wamid.FAKE000000"
    assert stored.attempts == 1
    assert len(world.graph.requests) == 1


async def test_transient_errors_back_off_and_ambiguous_ones_wait_to_reconcile(world: World) -> None:
    await world.open_window()
    message = await world.send_text()
    world.graph.then(
        meta_error(503, 131016, "Service temporarily unavailable"), Scripted(kind="timeout")
    )

    await world.dispatcher.run_once()
    assert (await world.message(message.id)).status is MessageStatus.QUEUED
    assert await world.dispatcher.run_once() == 0  # not due before its backoff (2 s)
    world.clock.advance(seconds=2)
    assert await world.dispatcher.run_once() == 1  # the timeout: Meta may have it
    world.clock.advance(seconds=29)
    assert await world.dispatcher.run_once() == 0  # waits for a status webhook first (30 s)
    world.clock.advance(seconds=1)
    assert await world.dispatcher.run_once() == 1

    stored = await world.message(message.id)
    assert stored.status is MessageStatus.ACCEPTED
    assert stored.attempts == 3


async def test_retries_stop_at_the_policy_limit_with_the_last_reason(world: World) -> None:
    await world.open_window()
    message = await world.send_text()
    world.graph.then(*[meta_error(500, 131000, "Something went wrong")] * 10)

    for _ in range(10):
        await world.dispatcher.run_once()
        world.clock.advance(seconds=60)

    stored = await world.message(message.id)
    assert stored.status is MessageStatus.FAILED
    assert stored.attempts == 4
    assert stored.error is not None
    assert stored.error.code == 131000
    assert len(world.graph.requests) == 4


async def test_window_closed_while_queued_fails_without_calling_meta(world: World) -> None:
    await world.open_window()
    message = await world.send_text()
    world.clock.advance(hours=24)

    await world.dispatcher.run_once()

    stored = await world.message(message.id)
    assert stored.status is MessageStatus.FAILED
    assert stored.error is not None
    assert stored.error.code == "window_closed_before_send"
    assert str(stored.error.source) == "router"
    assert world.graph.requests == []


async def test_an_expired_lease_makes_the_message_due_again(world: World) -> None:
    await world.open_window()
    message = await world.send_text()
    async with world.db.write() as conn:
        claimed = await outbox.claim_due(
            conn,
            owner="crashed-worker",
            now=world.clock.now,
            lease=timedelta(seconds=30),
            limit=10,
            skip_locked=False,
        )
    assert [job.id for job in claimed] == [message.id]

    assert await world.dispatcher.run_once() == 0
    world.clock.advance(seconds=31)
    assert await world.dispatcher.run_once() == 1

    assert (await world.message(message.id)).status is MessageStatus.ACCEPTED
    assert len(world.graph.requests) == 1


async def test_a_dispatcher_claims_only_while_a_third_of_its_sender_lease_is_left(
    world: World,
) -> None:
    """It renews its sender leases every third of a lease; if that did not happen (a slow
    database), it stops sending before another dispatcher could take the sender over."""
    await world.open_window()
    dispatcher = Dispatcher(
        world.db, world.cloud, clock=world.clock, policy=POLICY, idle_poll=0.01, rand=lambda: 1.0
    )  # a 30 s lease: renewed every 10 s of real time, so not during this test

    async def sent(count: int) -> bool:
        for _ in range(200):
            if len(world.graph.requests) >= count:
                return True
            await asyncio.sleep(0.01)
        return False

    running = asyncio.create_task(dispatcher.run())
    await world.send_text("first")
    assert await sent(1)  # the sender's lease is taken until 30 s from now
    world.clock.advance(seconds=19)
    await world.send_text("second")
    assert await sent(2)  # 11 s left
    world.clock.advance(seconds=2)
    third = await world.send_text("third")
    assert not await sent(3)  # 9 s left: it waits for its renewal
    dispatcher.stop()  # gives the sender back, free a pace window later
    await asyncio.wait_for(running, timeout=10)
    world.clock.advance(seconds=PACE_WINDOW_SECONDS)

    assert await dispatcher.run_once() == 1  # a fresh lease: it goes
    assert (await world.message(third.id)).status is MessageStatus.ACCEPTED


async def test_an_expired_token_pauses_the_sender_until_resumed(world: World) -> None:
    await world.open_window()
    await world.open_window("14155550000")
    first = await world.send_text()
    second = await world.send_text(wa_id="14155550000")
    world.graph.then(
        meta_error(401, 190, "Access token expired"), meta_error(401, 190, "Access token expired")
    )

    await world.dispatcher.run_once()

    for message in (first, second):
        stored = await world.message(message.id)
        assert stored.status is MessageStatus.QUEUED
        assert stored.attempts == 0  # not the message's fault
    async with world.db.read() as conn:
        sender = await key_repo.get_sender(conn, SENDER)
    assert sender is not None
    assert sender.paused_until is not None
    assert sender.paused_until.year == 9999  # only a human can fix a token
    assert sender.pause_reason == "190: Access token expired"
    calls = len(world.graph.requests)
    world.clock.advance(days=30)
    assert await world.dispatcher.run_once() == 0
    assert len(world.graph.requests) == calls

    async with world.db.write() as conn:
        assert await key_repo.resume_sender(conn, SENDER)
    await world.open_window()
    await world.open_window("14155550000")
    await world.dispatcher.run_once()

    assert (await world.message(first.id)).status is MessageStatus.ACCEPTED
    assert (await world.message(second.id)).status is MessageStatus.ACCEPTED
    assert len(world.graph.requests) == calls + 2


async def test_a_spam_limit_pauses_the_sender_for_its_cool_down(world: World) -> None:
    await world.open_window()
    message = await world.send_text()
    world.graph.then(meta_error(400, 131048, "Spam rate limit hit"))

    await world.dispatcher.run_once()
    world.clock.advance(minutes=59)
    await world.open_window()
    assert await world.dispatcher.run_once() == 0
    world.clock.advance(minutes=1)
    assert await world.dispatcher.run_once() == 1

    assert (await world.message(message.id)).status is MessageStatus.ACCEPTED


async def test_131047_fails_the_message_and_closes_the_window(world: World) -> None:
    await world.open_window()
    message = await world.send_text()
    world.graph.then(meta_error(400, 131047, "Re-engagement message", "24 hours"))

    await world.dispatcher.run_once()

    stored = await world.message(message.id)
    assert stored.status is MessageStatus.FAILED
    assert stored.error is not None
    assert (stored.error.code, stored.error.detail) == (131047, "24 hours")
    async with world.db.read() as conn:
        state = await contact_repo.window_state(conn, SENDER, CUSTOMER)
    assert state.closed_at == world.clock.now


async def test_templates_go_out_with_the_window_closed(world: World) -> None:
    from app.services.sending import SendRequest
    from domain import content

    accepted = await world.sending.accept(
        SendRequest(
            key=world.key,
            route="test",
            sender_id=SENDER,
            wa_id=CUSTOMER,
            content=content.template(name="hello_world", language="en_US", components=[]),
            reply_to=None,
            metadata={},
            correlation_id="req_t",
        )
    )

    await world.dispatcher.run_once()

    assert (await world.message(accepted.message_id)).status is MessageStatus.ACCEPTED
    assert world.graph.requests[0].body["type"] == "template"


async def test_the_loop_wakes_on_new_messages_and_stops_cleanly(world: World) -> None:
    import asyncio

    dispatcher = Dispatcher(world.db, world.cloud, clock=world.clock, idle_poll=30.0)
    await world.open_window()
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0.05)
    message = await world.send_text()
    dispatcher.wake()
    # The woken pass sees the new sender; senders not yet held are leased within a second of
    # the last lease renewal, so give it a few (100 polls of 10 ms were as fast as a second on
    # PostgreSQL, and raced that second).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline:
        if (await world.message(message.id)).status is MessageStatus.ACCEPTED:
            break
        await asyncio.sleep(0.01)
    dispatcher.stop()
    await asyncio.wait_for(task, timeout=5)

    assert (await world.message(message.id)).status is MessageStatus.ACCEPTED
    assert dispatcher.heartbeat is not None


async def test_a_status_webhook_during_reconciliation_prevents_a_resend(world: World) -> None:
    from adapters.cloud_api.sandbox import status_webhook
    from adapters.cloud_api.webhooks import decoder
    from app.services.webhooks import ingest

    await world.open_window()
    message = await world.send_text()
    world.graph.then(Scripted(kind="timeout"))
    await world.dispatcher.run_once()  # timed out, but Meta did accept it
    body = status_webhook(
        phone_number_id=SENDER,
        wamid="wamid.LATE",
        status="sent",
        wa_id=CUSTOMER,
        at=world.clock.now,
        callback_data=message.id,
    )
    await ingest(world.db, decoder.decode(body), now=world.clock.now)

    world.clock.advance(minutes=5)
    assert await world.dispatcher.run_once() == 0

    stored = await world.message(message.id)
    assert stored.status is MessageStatus.SENT
    assert stored.wamid == "wamid.LATE"
    assert len(world.graph.requests) == 1


async def test_a_dispatch_that_crashes_is_counted_and_ends_failed(world: World) -> None:
    class Exploding:
        async def send(self, phone_number_id: str, payload: object, **_: object) -> object:
            raise RuntimeError("bug")

    dispatcher = Dispatcher(
        world.db,
        Exploding(),
        clock=world.clock,  # type: ignore[arg-type]
        policy=POLICY,
        rand=lambda: 1.0,
    )
    await world.open_window()
    message = await world.send_text()

    for _ in range(6):
        await dispatcher.run_once()
        world.clock.advance(minutes=2)

    stored = await world.message(message.id)
    assert stored.status is MessageStatus.FAILED
    assert stored.attempts == 4
    assert stored.error is not None
    assert stored.error.code == "router_error"


async def test_a_slow_meta_never_makes_two_dispatchers_send_the_same_message(
    world: World,
) -> None:
    import asyncio
    from datetime import UTC, datetime

    from domain.ports import SendResult

    class SlowMeta:
        calls = 0

        async def send(self, phone_number_id: str, payload: object, **_: object) -> SendResult:
            SlowMeta.calls += 1
            await asyncio.sleep(2.0)
            return SendResult(wamid="wamid.SLOW")

    def real_clock() -> datetime:
        return datetime.now(UTC)

    first, second = (
        Dispatcher(
            world.db,
            SlowMeta(),
            clock=real_clock,
            policy=POLICY,
            lease=timedelta(seconds=1.2),
            owner=name,
        )
        for name in ("first", "second")
    )
    world.clock.now = real_clock()
    await world.open_window()
    message = await world.send_text()

    async def keep_claiming(dispatcher: Dispatcher) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 3.0
        while loop.time() < end:
            await dispatcher.run_once()
            await asyncio.sleep(0.05)

    await asyncio.gather(keep_claiming(first), keep_claiming(second))

    assert SlowMeta.calls == 1  # cut at 75 % of its lease, then left to reconcile
    stored = await world.message(message.id)
    assert stored.status is MessageStatus.QUEUED
    assert stored.attempts == 1


async def test_the_janitor_sweeps_expired_keys_and_stale_parked_statuses(world: World) -> None:
    from adapters.db import contacts as contact_repo
    from adapters.db import idempotency as idempotency_repo
    from app.services.janitor import Janitor

    async with world.db.write() as conn:
        for key, expires in (("old", world.clock.now), ("live", world.clock.now + timedelta(1))):
            await idempotency_repo.store(
                conn,
                client_id="cli",
                key=key,
                now=world.clock.now,
                expires_at=expires,
                response=idempotency_repo.StoredResponse(
                    fingerprint="f", message_id="msg_1", status=202, body="{}"
                ),
            )
        await contact_repo.park_status(
            conn,
            wamid="wamid.OTHER_APP",
            status="sent",
            at=world.clock.now,
            error=None,
            now=world.clock.now,
        )

    assert await Janitor(world.db, clock=world.clock).run_once() == 1
    world.clock.advance(days=9)
    assert await Janitor(world.db, clock=world.clock).run_once() == 2

    async with world.db.read() as conn:
        assert await idempotency_repo.find(conn, "cli", "live", now=world.clock.now) is None


async def test_a_message_past_its_valid_until_fails_expired_unsent(world: World) -> None:
    from app.services.sending import SendRequest
    from domain import content

    await world.open_window()
    accepted = await world.sending.accept(
        SendRequest(
            key=world.key,
            route="test",
            sender_id=SENDER,
            wa_id=CUSTOMER,
            content=content.free_form(text="flash sale, 1 hour"),
            reply_to=None,
            metadata={},
            correlation_id="req_v",
            valid_until=world.clock.now + timedelta(hours=1),
        )
    )
    world.clock.advance(hours=1)

    await world.dispatcher.run_once()

    stored = await world.message(accepted.message_id)
    assert stored.status is MessageStatus.FAILED
    assert stored.error is not None
    assert (stored.error.code, str(stored.error.source)) == ("expired", "router")
    assert world.graph.requests == []
