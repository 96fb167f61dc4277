"""Meta-style webhook batches for the benchmarks, signed with the app secret like Meta's."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from adapters.cloud_api.webhooks import sign
from tests.bench.load import Request

WABA_ID = "102290129340398"
WEBHOOK_PATH = "/v1/whatsapp/webhook"


def _envelope(sender_id: str, value: dict[str, Any]) -> bytes:
    return msgspec.json.encode(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA_ID,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550100199",
                                    "phone_number_id": sender_id,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }
    )


def signed(body: bytes, secret: str) -> Request:
    return Request(
        "POST",
        WEBHOOK_PATH,
        {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)},
        body,
    )


def inbound_batch(sender_id: str, wa_ids: list[str]) -> bytes:
    """One batch in which every customer of ``wa_ids`` writes: it opens their windows."""
    at = str(int(time.time()))
    return _envelope(
        sender_id,
        {
            "contacts": [{"profile": {"name": "Bench"}, "wa_id": wa} for wa in wa_ids],
            "messages": [
                {
                    "from": wa,
                    "id": f"wamid.BENCHIN{wa}{at}",
                    "timestamp": at,
                    "type": "text",
                    "text": {"body": "hi"},
                }
                for wa in wa_ids
            ],
        },
    )


def status_batches(
    sender_id: str, messages: list[tuple[str, str]], *, per_batch: int = 50
) -> list[bytes]:
    """``sent``, then ``delivered``, then ``read`` for every (message id, wa_id), whose wamid is
    ``wamid.{id}``, ``per_batch`` statuses a batch, as Meta sends them (conversation and
    pricing on sent and delivered; our id back in biz_opaque_callback_data)."""
    base = int(time.time()) - 60
    batches = []
    for step, status in enumerate(("sent", "delivered", "read")):
        for start in range(0, len(messages), per_batch):
            statuses = []
            for message_id, wa_id in messages[start : start + per_batch]:
                entry: dict[str, Any] = {
                    "id": f"wamid.{message_id}",
                    "status": status,
                    "timestamp": str(base + step),
                    "recipient_id": wa_id,
                    "biz_opaque_callback_data": message_id,
                }
                if status != "read":
                    entry["conversation"] = {
                        "id": "CONVERSATION_ID_" + wa_id,
                        "origin": {"type": "service"},
                    }
                    entry["pricing"] = {
                        "billable": False,
                        "pricing_model": "PMP",
                        "category": "service",
                        "type": "free_customer_service",
                    }
                statuses.append(entry)
            batches.append(_envelope(sender_id, {"statuses": statuses}))
    return batches
