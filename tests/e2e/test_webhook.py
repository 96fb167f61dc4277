"""Meta's webhook: handshake, signatures over the raw bytes, batches, redeliveries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import func, select

from adapters.cloud_api.sandbox import inbound_text_webhook, status_webhook
from adapters.cloud_api.webhooks import sign
from adapters.db import contacts as contact_repo
from adapters.db.tables import inbound_messages, message_events
from tests.e2e.conftest import CUSTOMER, SENDER, Router
from tests.e2e.test_bad_input import assert_problem


async def test_handshake_answers_the_challenge_only_with_the_verify_token(router: Router) -> None:
    ok = await router.client.get(
        "/v1/whatsapp/webhook",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": "verify-me",
            "hub.challenge": "1158201444",
        },
    )
    wrong = await router.client.get(
        "/v1/whatsapp/webhook",
        params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
    )
    missing = await router.client.get("/v1/whatsapp/webhook")

    assert ok.status_code == 200
    assert ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    assert_problem(wrong, 403, "webhook_verification_failed")
    assert_problem(missing, 403, "webhook_verification_failed")


def _inbound(wamid: str = "wamid.IN1", at: datetime | None = None) -> bytes:
    return inbound_text_webhook(
        phone_number_id=SENDER, wa_id=CUSTOMER, wamid=wamid, text="hi", at=at or datetime.now(UTC)
    )


async def _window(router: Router) -> datetime | None:
    async with router.services.db.read() as conn:
        return (await contact_repo.window_state(conn, SENDER, CUSTOMER)).last_inbound_at


async def test_unsigned_or_wrongly_signed_posts_change_nothing(router: Router) -> None:
    body = _inbound()
    attempts = [
        {"Content-Type": "application/json"},
        {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, "other-secret")},
        {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(body, "test-app-secret").removeprefix("sha256="),
        },
        {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(body + b" ", "test-app-secret"),
        },
    ]
    for headers in attempts:
        response = await router.client.post("/v1/whatsapp/webhook", content=body, headers=headers)
        assert_problem(response, 401, "webhook_signature_invalid")

    assert await _window(router) is None


async def test_signature_is_checked_over_the_raw_bytes(router: Router) -> None:
    compact = _inbound("wamid.RAW")
    reformatted = msgspec.json.format(compact, indent=2)

    response = await router.webhook(reformatted)

    assert response.status_code == 200
    assert await _window(router) is not None


async def test_inbound_moves_the_window_forward_by_metas_timestamp_only(router: Router) -> None:
    newer = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    older = newer - timedelta(hours=3)

    assert (await router.webhook(_inbound("wamid.A", newer))).status_code == 200
    assert (await router.webhook(_inbound("wamid.B", older))).status_code == 200

    assert await _window(router) == newer


async def test_redelivered_batches_are_harmless(router: Router) -> None:
    body = _inbound("wamid.DUP")
    for _ in range(3):
        assert (await router.webhook(body)).status_code == 200

    async with router.services.db.read() as conn:
        count = await conn.scalar(select(func.count()).select_from(inbound_messages))
    assert count == 1


async def test_every_entry_change_and_status_of_a_batch_is_processed(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    ids = [(await router.send(headers, text=f"m{i}")).json()["id"] for i in range(3)]
    wamids = [(await router.wait_for(i, headers, "accepted"))["wamid"] for i in ids]
    now = str(int(datetime.now(UTC).timestamp()))
    batch = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": SENDER},
                            "statuses": [
                                {"id": wamids[0], "status": "delivered", "timestamp": now},
                                {"id": wamids[1], "status": "read", "timestamp": now},
                            ],
                        },
                    }
                ],
            },
            {
                "id": "2",
                "changes": [
                    {"field": "message_template_status_update", "value": {"event": "APPROVED"}},
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": SENDER},
                            "statuses": [
                                {
                                    "id": wamids[2],
                                    "status": "sent",
                                    "timestamp": now,
                                    "pricing": {"type": "regular"},
                                    "new_field": [1, 2],
                                }
                            ],
                        },
                    },
                ],
            },
        ],
    }

    assert (await router.webhook(msgspec.json.encode(batch))).status_code == 200

    statuses = [
        (await router.client.get(f"/v1/whatsapp/messages/{i}", headers=headers)).json()["status"]
        for i in ids
    ]
    assert statuses == ["delivered", "read", "sent"]


async def test_status_for_an_unknown_wamid_is_parked_until_the_wamid_is_known(
    router: Router,
) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    early = status_webhook(
        phone_number_id=SENDER,
        wamid="wamid.FAKE000000",
        status="delivered",
        wa_id=CUSTOMER,
        at=datetime.now(UTC),
        callback_data=None,
    )
    assert (await router.webhook(early)).status_code == 200

    message = (await router.send(headers, text="hello")).json()

    delivered = await router.wait_for(message["id"], headers, "delivered")
    assert delivered["wamid"] == "wamid.FAKE000000"
    assert [h["status"] for h in delivered["history"]] == ["queued", "accepted", "delivered"]


async def test_a_status_that_beats_the_wamid_commit_is_found_by_our_callback_data(
    router: Router,
) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    router.graph.then()
    message = (await router.send(headers, text="hello")).json()

    response = await router.status("wamid.RACE", "sent", callback=message["id"])

    assert response.status_code == 200
    body = await router.wait_for(message["id"], headers, "sent")
    assert body["wamid"] in ("wamid.RACE", "wamid.FAKE000000")


async def test_unreadable_signed_payloads_are_400(router: Router) -> None:
    for body in (b"not json", b'{"entry": "nope"}', b"\xff\xfe"):
        response = await router.webhook(body)
        assert_problem(response, 400, "malformed_json")


async def test_an_unreadable_item_is_skipped_and_the_rest_of_the_batch_stored(
    router: Router,
) -> None:
    now = str(int(datetime.now(UTC).timestamp()))
    batch = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": SENDER},
                            "messages": [
                                {
                                    "from": CUSTOMER,
                                    "id": "wamid.BAD",
                                    "timestamp": "1.7e9",
                                    "type": "text",
                                },
                                {
                                    "from": CUSTOMER,
                                    "id": "wamid.LONG" + "x" * 300,
                                    "timestamp": now,
                                    "type": "text",
                                },
                                {
                                    "from": CUSTOMER,
                                    "id": "wamid.GOOD",
                                    "timestamp": now,
                                    "type": "text",
                                },
                            ],
                        },
                    }
                ],
            }
        ],
    }

    response = await router.webhook(msgspec.json.encode(batch))

    assert response.status_code == 200
    assert await _window(router) == datetime.fromtimestamp(int(now), tz=UTC)
    async with router.services.db.read() as conn:
        stored = (await conn.execute(select(inbound_messages.c.wamid))).scalars().all()
    assert stored == ["wamid.GOOD"]


async def test_a_late_131047_does_not_close_a_window_the_customer_reopened(
    router: Router,
) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    message = (await router.send(headers, text="hello")).json()
    wamid = (await router.wait_for(message["id"], headers, "accepted"))["wamid"]
    long_ago = datetime.now(UTC) - timedelta(hours=30)
    late = status_webhook(
        phone_number_id=SENDER,
        wamid=wamid,
        status="failed",
        wa_id=CUSTOMER,
        at=long_ago,
        callback_data=None,
        errors=[{"code": 131047, "title": "Re-engagement message"}],
    )

    assert (await router.webhook(late)).status_code == 200

    assert (await router.send(headers, text="still open")).status_code == 202
    fresh = status_webhook(
        phone_number_id=SENDER,
        wamid=wamid,
        status="failed",
        wa_id=CUSTOMER,
        at=datetime.now(UTC),
        callback_data=None,
        errors=[{"code": 131047, "title": "Re-engagement message"}],
    )
    assert (await router.webhook(fresh)).status_code == 200
    closed = await router.send(headers, text="now closed")
    assert_problem(closed, 422, "outside_service_window")


async def test_delivered_after_failed_clears_the_error(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    message = (await router.send(headers, text="hello")).json()
    wamid = (await router.wait_for(message["id"], headers, "accepted"))["wamid"]

    await router.status(wamid, "failed", errors=[{"code": 131000, "title": "Something"}])
    assert (await router.wait_for(message["id"], headers, "failed"))["error"]["code"] == 131000
    await router.status(wamid, "delivered")

    delivered = await router.wait_for(message["id"], headers, "delivered")
    assert delivered["error"] is None
    assert [h["status"] for h in delivered["history"]] == [
        "queued",
        "accepted",
        "failed",
        "delivered",
    ]


def statuses_batch(*statuses: dict[str, object]) -> bytes:
    """One webhook POST carrying ``statuses`` in order, as Meta batches them."""
    value = {"metadata": {"phone_number_id": SENDER}, "statuses": list(statuses)}
    change = {"field": "messages", "value": value}
    body = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}
    return msgspec.json.encode(body)


async def test_several_statuses_of_one_message_in_one_batch_apply_in_order(
    router: Router,
) -> None:
    """Written together at the end of the batch (one INSERT, one UPDATE per message), they
    must end as one by one: the furthest status wins, a late one is kept unapplied, and a
    failure that a later delivery overrides leaves no error."""
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    ids = [(await router.send(headers, text=f"m{i}")).json()["id"] for i in range(2)]
    wamids = [(await router.wait_for(i, headers, "accepted"))["wamid"] for i in ids]
    t = int(datetime.now(UTC).timestamp())
    failure = {"code": 131000, "title": "Something went wrong"}
    body = statuses_batch(
        {"id": wamids[0], "status": "sent", "timestamp": str(t)},
        {"id": wamids[1], "status": "failed", "timestamp": str(t), "errors": [failure]},
        {"id": wamids[0], "status": "read", "timestamp": str(t + 2)},
        {"id": wamids[0], "status": "delivered", "timestamp": str(t + 1)},  # late: kept only
        {"id": wamids[1], "status": "delivered", "timestamp": str(t + 1)},  # another device
    )

    assert (await router.webhook(body)).status_code == 200

    first, second = [
        (await router.client.get(f"/v1/whatsapp/messages/{i}", headers=headers)).json() for i in ids
    ]
    assert first["status"] == "read"
    assert [h["status"] for h in first["history"]] == ["queued", "accepted", "sent", "read"]
    assert second["status"] == "delivered"
    assert second["error"] is None
    assert [h["status"] for h in second["history"]] == [
        "queued",
        "accepted",
        "failed",
        "delivered",
    ]
    async with router.services.db.read() as conn:
        kept = await conn.execute(
            select(message_events.c.status, message_events.c.applied)
            .where(message_events.c.message_id == ids[0], message_events.c.kind == "status")
            .order_by(message_events.c.id)
        )
        assert [tuple(row) for row in kept][-3:] == [
            ("sent", True),
            ("read", True),
            ("delivered", False),  # late, kept for support
        ]


async def test_a_batch_with_a_callback_found_status_then_its_wamid_again(
    router: Router,
) -> None:
    """The first status finds the message by our id (its wamid not stored yet) and stores the
    wamid; the next one in the same batch finds it by that wamid."""
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    router.graph.then()  # Meta's answer never arrives: the wamid comes by webhook only
    message = (await router.send(headers, text="hello")).json()
    t = int(datetime.now(UTC).timestamp())
    body = statuses_batch(
        {
            "id": "wamid.RACE2",
            "status": "sent",
            "timestamp": str(t),
            "biz_opaque_callback_data": message["id"],
        },
        {"id": "wamid.RACE2", "status": "delivered", "timestamp": str(t + 1)},
    )

    assert (await router.webhook(body)).status_code == 200

    found = await router.wait_for(message["id"], headers, "delivered")
    assert [h["status"] for h in found["history"]][-2:] == ["sent", "delivered"]
