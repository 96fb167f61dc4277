"""The whole story through the app: send in window → Meta's JSON → accepted → webhooks → read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.e2e.conftest import CUSTOMER, SENDER, Router
from tests.fakes import Scripted, meta_error


async def test_message_in_window_reaches_read(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()

    response = await router.send(
        headers, sender_id=SENDER, text="Your order *#123* has shipped", metadata={"t": "T-991"}
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["to"] == CUSTOMER
    assert body["metadata"] == {"t": "T-991"}
    assert response.headers["location"] == f"/v1/whatsapp/messages/{body['id']}"
    assert response.headers["x-correlation-id"] == body["correlation_id"]

    accepted = await router.wait_for(body["id"], headers, "accepted")
    assert accepted["attempts"] == 1
    [sent] = router.graph.requests
    assert sent.path == f"/v25.0/{SENDER}/messages"
    assert sent.headers["authorization"] == "Bearer test-token"
    assert sent.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+" + CUSTOMER,
        "biz_opaque_callback_data": body["id"],
        "type": "text",
        "text": {"preview_url": False, "body": "Your order *#123* has shipped"},
    }
    wamid = accepted["wamid"]
    for status in ("sent", "delivered", "read"):
        assert (await router.status(wamid, status)).status_code == 200

    final = await router.wait_for(body["id"], headers, "read")
    assert [h["status"] for h in final["history"]] == [
        "queued",
        "accepted",
        "sent",
        "delivered",
        "read",
    ]
    assert final["error"] is None
    assert final["metadata"] == {"t": "T-991"}


async def test_late_and_duplicate_webhooks_never_move_a_status_back(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    message = (await router.send(headers, text="hello")).json()
    wamid = (await router.wait_for(message["id"], headers, "accepted"))["wamid"]

    for status in ("read", "delivered", "sent", "read", "delivered"):
        assert (await router.status(wamid, status)).status_code == 200

    final = await router.wait_for(message["id"], headers, "read")
    assert [h["status"] for h in final["history"]] == ["queued", "accepted", "read"]


async def test_closed_window_is_refused_at_once_and_nothing_is_sent(router: Router) -> None:
    await router.sender()
    headers = await router.key()

    never = await router.send(headers, text="hello")

    assert never.status_code == 422
    problem = never.json()
    assert never.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "outside_service_window"
    assert problem["last_inbound_at"] is None
    assert problem["window_closed_at"] is None
    assert problem["templates_url"] == "/v1/whatsapp/templates"
    assert problem["correlation_id"] == never.headers["x-correlation-id"]

    wrote_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=25)
    await router.customer_writes(at=wrote_at)
    expired = await router.send(headers, text="hello")

    assert expired.status_code == 422
    assert expired.json()["last_inbound_at"] == wrote_at.isoformat().replace("+00:00", "Z")
    assert expired.json()["window_closed_at"] == (
        wrote_at + timedelta(hours=24)
    ).isoformat().replace("+00:00", "Z")
    assert await router.stored_messages() == 0
    assert router.graph.requests == []


async def test_window_is_per_sender_and_contact(router: Router) -> None:
    await router.sender()
    await router.sender("106540352242923")
    headers = await router.key()
    await router.customer_writes(sender="106540352242923")

    assert (await router.send(headers, sender_id=SENDER, text="x")).status_code == 422
    assert (await router.send(headers, sender_id="106540352242923", text="x")).status_code == 202
    assert (
        await router.send(headers, sender_id="106540352242923", to="+14155550000", text="x")
    ).status_code == 422


async def test_meta_131047_fails_the_message_and_corrects_the_window(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    router.graph.then(meta_error(400, 131047, "Re-engagement message", "more than 24 hours"))

    message = (await router.send(headers, text="hello")).json()
    failed = await router.wait_for(message["id"], headers, "failed")

    assert failed["error"] == {
        "code": 131047,
        "title": "Re-engagement message",
        "detail": "more than 24 hours",
        "source": "cloud_api",
    }
    assert failed["attempts"] == 1
    again = await router.send(headers, text="hello again")
    assert again.status_code == 422
    assert again.json()["code"] == "outside_service_window"
    await router.customer_writes()
    assert (await router.send(headers, text="now it is open")).status_code == 202


async def test_two_server_errors_then_success_ends_accepted_after_three_attempts(
    router: Router,
) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    router.graph.then(
        meta_error(500, 131000, "Something went wrong"), Scripted(kind="error", http_status=503)
    )

    message = (await router.send(headers, text="hello")).json()
    accepted = await router.wait_for(message["id"], headers, "accepted")

    assert accepted["attempts"] == 3
    assert len(router.graph.requests) == 3
    assert {r.body["biz_opaque_callback_data"] for r in router.graph.requests} == {message["id"]}


async def test_permanent_error_fails_with_metas_reason(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    router.graph.then(meta_error(400, 131026, "Message undeliverable", "not on WhatsApp"))

    message = (await router.send(headers, text="hello")).json()
    failed = await router.wait_for(message["id"], headers, "failed")

    assert failed["error"]["code"] == 131026
    assert failed["error"]["source"] == "cloud_api"
    assert (
        "Retry-After"
        not in (
            await router.client.get(f"/v1/whatsapp/messages/{message['id']}", headers=headers)
        ).headers
    )


async def test_failed_status_webhook_records_metas_error(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    message = (await router.send(headers, text="hello")).json()
    wamid = (await router.wait_for(message["id"], headers, "accepted"))["wamid"]

    response = await router.status(
        wamid,
        "failed",
        errors=[
            {
                "code": 131049,
                "title": "This message was not delivered",
                "error_data": {"details": "healthy ecosystem"},
            }
        ],
    )

    assert response.status_code == 200
    failed = await router.wait_for(message["id"], headers, "failed")
    assert failed["error"] == {
        "code": 131049,
        "title": "This message was not delivered",
        "detail": "healthy ecosystem",
        "source": "cloud_api",
    }


async def test_template_goes_out_without_a_window(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    template = {
        "name": "order_shipped",
        "language": "en_US",
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
    }

    response = await router.client.post(
        "/v1/whatsapp/templates",
        json={"to": "+1 (415) 555-2671", "template": template},
        headers=headers,
    )

    assert response.status_code == 202
    message = response.json()
    assert message["kind"] == "template"
    await router.wait_for(message["id"], headers, "accepted")
    assert router.graph.requests[0].body["template"] == {
        "name": "order_shipped",
        "language": {"code": "en_US"},
        "components": template["components"],
    }
    assert router.graph.requests[0].body["to"] == "+14155552671"


async def test_interactive_media_and_reply_context_are_sent_as_meta_expects(
    router: Router,
) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()

    buttons = await router.send(
        headers,
        text="Reschedule?",
        header="Workshop",
        footer="Lucky Shrub",
        buttons=[{"id": "change", "title": "Change"}, {"id": "cancel", "title": "Cancel"}],
        reply_to="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
    )
    media = await router.send(
        headers,
        text="Invoice",
        media={"kind": "document", "url": "https://ex.com/inv.pdf", "filename": "invoice.pdf"},
    )

    assert buttons.status_code == 202, buttons.text
    assert media.status_code == 202, media.text
    await router.wait_for(media.json()["id"], headers, "accepted")
    await router.wait_for(buttons.json()["id"], headers, "accepted")
    by_id = {r.body["biz_opaque_callback_data"]: r.body for r in router.graph.requests}
    sent_buttons = by_id[buttons.json()["id"]]
    assert sent_buttons["context"] == {
        "message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    }
    assert sent_buttons["interactive"] == {
        "type": "button",
        "header": {"type": "text", "text": "Workshop"},
        "body": {"text": "Reschedule?"},
        "footer": {"text": "Lucky Shrub"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": "change", "title": "Change"}},
                {"type": "reply", "reply": {"id": "cancel", "title": "Cancel"}},
            ]
        },
    }
    assert by_id[media.json()["id"]]["document"] == {
        "link": "https://ex.com/inv.pdf",
        "caption": "Invoice",
        "filename": "invoice.pdf",
    }


async def test_status_read_supports_etag_and_retry_after(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    message = (await router.send(headers, text="hello")).json()
    accepted = await router.wait_for(message["id"], headers, "accepted")
    url = f"/v1/whatsapp/messages/{message['id']}"

    first = await router.client.get(url, headers=headers)
    etag = first.headers["etag"]
    cached = await router.client.get(url, headers={**headers, "If-None-Match": etag})

    assert first.headers["retry-after"] == "2"
    assert cached.status_code == 304
    assert cached.content == b""
    await router.status(accepted["wamid"], "read")
    await router.wait_for(message["id"], headers, "read")
    changed = await router.client.get(url, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert "retry-after" not in changed.headers


async def test_a_client_cannot_read_another_clients_message(router: Router) -> None:
    await router.sender()
    mine = await router.key("crm-a")
    theirs = await router.key("crm-b")
    await router.customer_writes()
    message = (await router.send(mine, text="hello")).json()

    response = await router.client.get(f"/v1/whatsapp/messages/{message['id']}", headers=theirs)
    unknown = await router.client.get("/v1/whatsapp/messages/msg_nope", headers=mine)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert unknown.status_code == 404
