"""Wire types of our own routes (msgspec). Bodies we define forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

Phone = Annotated[
    str,
    Meta(
        description="E.164, with or without +; spaces, dashes, dots and parentheses are ignored",
        examples=["+14155552671"],
    ),
]
SenderId = Annotated[
    str,
    Meta(
        description="The sender's Cloud API phone_number_id; optional when "
        "the key allows one sender or only one exists",
        examples=["106540352242922"],
    ),
]
ValidUntil = Annotated[
    datetime,
    Meta(
        tz=True,
        description="RFC 3339 with a time zone, in the future, at most 30 days ahead: the "
        "message fails `expired` instead of going out later than this",
    ),
]
Metadata = Annotated[
    dict[str, str],
    Meta(
        description="Flat object of strings, at most 16 keys "
        "and 2 KiB encoded; echoed on the status"
    ),
]


class ButtonIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[
        str, Meta(description="1-256 characters, unique; comes back in the reply webhook")
    ]
    title: Annotated[str, Meta(description="1-20 characters, unique")]


class MediaIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: Annotated[str, Meta(description="image, video, audio, document or sticker")]
    url: Annotated[str, Meta(description="https URL the Cloud API fetches")]
    caption: str | None = None
    filename: Annotated[str | None, Meta(description="documents only")] = None


class SendMessageRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A free-form message: text, reply buttons (with header/footer/buttons) or media by link."""

    to: Phone
    sender_id: SenderId | None = None
    text: Annotated[
        str | None,
        Meta(description="1-4096 characters; 1-1024 with buttons; the caption with media"),
    ] = None
    preview_url: bool | None = None
    header: Annotated[str | None, Meta(description="Reply-button message header, 1-60")] = None
    footer: Annotated[str | None, Meta(description="Reply-button message footer, 1-60")] = None
    buttons: Annotated[list[ButtonIn] | None, Meta(description="1-3 reply buttons")] = None
    media: MediaIn | None = None
    reply_to: Annotated[str | None, Meta(description="wamid of the message to quote")] = None
    metadata: Metadata | None = None
    valid_until: ValidUntil | None = None


class TemplateIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(examples=["order_shipped"])]
    language: Annotated[str, Meta(examples=["en_US"])]
    components: Annotated[
        list[dict[str, Any]],
        Meta(description="The Cloud API's own components, passed through"),
    ] = []


class SendTemplateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A template message; never window-checked."""

    to: Phone
    template: TemplateIn
    sender_id: SenderId | None = None
    metadata: Metadata | None = None
    valid_until: ValidUntil | None = None


class SandboxInboundRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A customer writing in, played by the sandbox."""

    from_: Annotated[Phone, Meta(description="The customer's number")] = msgspec.field(name="from")
    text: Annotated[str, Meta(max_length=4096)] = "hi"
    sender_id: SenderId | None = None


class StatusChangeOut(msgspec.Struct):
    status: str
    at: datetime


class MessageErrorOut(msgspec.Struct):
    code: int | str
    title: str
    detail: str | None
    source: Annotated[str, Meta(description="cloud_api or router")]


class MessageResource(msgspec.Struct):
    """A message and everything known about its delivery."""

    id: str
    status: Annotated[str, Meta(description="queued, accepted, sent, delivered, read or failed")]
    kind: str
    sender_id: str
    to: Annotated[str, Meta(description="wa_id: digits only")]
    correlation_id: str
    wamid: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    error: MessageErrorOut | None
    history: list[StatusChangeOut]
    metadata: dict[str, str]
    valid_until: datetime | None = None


class SandboxInboundResponse(msgspec.Struct):
    sender_id: str
    wa_id: str
    wamid: str
    last_inbound_at: datetime


class Health(msgspec.Struct):
    status: str


class MessageList(msgspec.Struct):
    """One page of the client's messages, newest first."""

    data: list[MessageResource]
    next_cursor: Annotated[
        str | None,
        Meta(description="Pass as `cursor` for the next page; null on the last page"),
    ]


class ContactWindow(msgspec.Struct):
    """The 24-hour customer service window of one (sender, contact) pair."""

    sender_id: str
    wa_id: Annotated[str, Meta(description="The contact: digits only")]
    open: Annotated[bool, Meta(description="A free-form message would be accepted now")]
    last_inbound_at: Annotated[
        datetime | None,
        Meta(description="The customer's newest message to this sender; null if they never wrote"),
    ]
    closes_at: Annotated[
        datetime | None,
        Meta(
            description="last_inbound_at + 24h, or earlier if the Cloud API reported the window "
            "closed; null if the customer never wrote"
        ),
    ]
    seconds_remaining: Annotated[int, Meta(ge=0, description="0 when closed")]


class TraceEventOut(msgspec.Struct):
    at: datetime
    kind: Annotated[
        str,
        Meta(
            description="request (route, client, key, status code, window decision), attempt "
            "(one Cloud API call: http_status, code, fbtrace_id, latency_ms, outcome) or status "
            "(a status change; applied=false for a late or duplicate report)"
        ),
    ]
    message_id: Annotated[str | None, Meta(description="null for a refused request")]
    detail: Annotated[
        dict[str, Any],
        Meta(description="Depends on kind; never secrets, never more than 80 characters of text"),
    ]


class CorrelationTrace(msgspec.Struct):
    """Everything the router recorded under one correlation id, in time order."""

    correlation_id: str
    events: list[TraceEventOut]
    truncated: Annotated[
        bool, Meta(description="true when the id has more events than one trace shows")
    ]
