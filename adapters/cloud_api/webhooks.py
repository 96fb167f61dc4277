"""Meta's webhook payloads: signature check over the raw bytes, then tolerant decoding.

Structs never forbid unknown fields: Meta adds fields over time (cloud-api.md §4)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import msgspec


def sign(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, header: str | None, app_secret: str) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(body, app_secret).encode(), header.strip().encode())


class ErrorData(msgspec.Struct):
    details: str | None = None


class WebhookError(msgspec.Struct):
    code: int | None = None
    title: str = ""
    message: str = ""
    error_data: ErrorData | None = None


class Metadata(msgspec.Struct):
    phone_number_id: str = ""
    display_phone_number: str = ""


class Contact(msgspec.Struct):
    wa_id: str | None = None
    user_id: str | None = None


class InboundMessage(msgspec.Struct):
    id: str
    timestamp: str
    type: str = ""
    from_: str | None = msgspec.field(default=None, name="from")
    from_user_id: str | None = None


class Status(msgspec.Struct):
    id: str
    status: str
    timestamp: str
    recipient_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: list[WebhookError] = []


class ChangeValue(msgspec.Struct):
    messaging_product: str = ""
    metadata: Metadata | None = None
    contacts: list[Contact] = []
    messages: list[InboundMessage] = []
    statuses: list[Status] = []
    errors: list[WebhookError] = []
    # field "message_template_status_update" (and "template_category_update"): entry.id is the
    # WABA. Meta sends the template id as a number.
    event: str | None = None
    message_template_id: int | str | None = None
    message_template_name: str | None = None
    message_template_language: str | None = None
    message_template_category: str | None = None
    reason: str | None = None
    previous_category: str | None = None
    new_category: str | None = None


class Change(msgspec.Struct):
    field: str = ""
    value: ChangeValue | None = None


class Entry(msgspec.Struct):
    id: str = ""
    changes: list[Change] = []


class WebhookPayload(msgspec.Struct):
    object: str = ""
    entry: list[Entry] = []


decoder = msgspec.json.Decoder(WebhookPayload)


def meta_time(timestamp: str) -> datetime:
    """Meta's timestamps are Unix seconds as strings."""
    return datetime.fromtimestamp(int(timestamp), tz=UTC)
