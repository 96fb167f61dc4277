"""Send routes and the message status resource."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ParamSpec, TypeVar

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, Parameter, QueryParameter

from adapters.db import listing
from app.container import Services
from app.errors import ApiError
from app.http import docs
from app.http.bodies import decode_body, wa_id_of
from app.http.openapi import SECURITY, json_body
from app.http.problems import correlation_of
from app.http.schemas import (
    MessageErrorOut,
    MessageList,
    MessageResource,
    SendMessageRequest,
    SendTemplateRequest,
    StatusChangeOut,
)
from app.services import reads
from app.services.sending import Accepted, IdempotencyClaim, SendRequest
from domain import content
from domain.model import ApiKey, Message, Scope
from domain.status import MessageStatus, is_final

_send_decoder = msgspec.json.Decoder(SendMessageRequest)
_template_decoder = msgspec.json.Decoder(SendTemplateRequest)
_encoder = msgspec.json.Encoder()

P = ParamSpec("P")
T = TypeVar("T")
MAX_IDEMPOTENCY_KEY = 255

#: How soon a poller should look again, by status (seconds).
POLL_AFTER = {
    MessageStatus.QUEUED: 1,
    MessageStatus.ACCEPTED: 2,
    MessageStatus.SENT: 5,
    MessageStatus.DELIVERED: 30,
}


DEFAULT_PAGE = 20
MAX_PAGE = 100
_MESSAGE_ID = re.compile(r"msg_[0-9A-HJKMNP-TV-Z]{26}")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,64}")


def resource(message: Message) -> MessageResource:
    error = message.error
    return MessageResource(
        id=message.id,
        status=str(message.status),
        kind=str(message.kind),
        sender_id=message.sender_id,
        to=message.wa_id,
        correlation_id=message.correlation_id,
        wamid=message.wamid,
        attempts=message.attempts,
        created_at=message.created_at,
        updated_at=message.updated_at,
        error=None
        if error is None
        else MessageErrorOut(
            code=error.code, title=error.title, detail=error.detail, source=str(error.source)
        ),
        history=[StatusChangeOut(status=str(c.status), at=c.at) for c in message.history],
        metadata=message.metadata,
        valid_until=message.valid_until,
    )


def _deadline(value: datetime | None, services: Services) -> datetime | None:
    return None if value is None else _checked(content.valid_until, value, services.clock())


def _checked(build: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return build(*args, **kwargs)
    except content.ContentError as exc:
        raise ApiError(422, "validation_failed", exc.detail, param=exc.param) from None


def render(message: Message) -> bytes:
    return _encoder.encode(resource(message))


def _accepted(accepted: Accepted) -> Response[MessageResource]:
    headers = {"Location": f"/v1/whatsapp/messages/{accepted.message_id}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    raw: Any = accepted.body  # pre-encoded: a replay answers with the bytes first sent
    return Response(content=raw, status_code=202, headers=headers, media_type="application/json")


IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        description="1-255 printable ASCII characters. The same key and body within 24 h "
        "returns the original 202 (Idempotent-Replayed: true); while the first request is "
        "running, 409 idempotency_in_progress; a different body, 422 idempotency_key_reused.",
    ),
]


async def idempotency_claim(
    request: Request[Any, Any, Any], key: str | None
) -> IdempotencyClaim | None:
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not all(" " <= c <= "~" for c in key):
        raise ApiError(
            422,
            "validation_failed",
            "Idempotency-Key must be 1-255 printable ASCII characters",
            param="Idempotency-Key",
        )
    canonical = msgspec.json.encode(msgspec.json.decode(await request.body()), order="sorted")
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return IdempotencyClaim(key=key, fingerprint=digest.hexdigest())


def encode_cursor(message_id: str) -> str:
    """Opaque to clients: the base64url of the last id of a page (ids sort by time)."""
    return base64.urlsafe_b64encode(message_id.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    """The message id a cursor stands for, or 422 naming ``cursor``. Only the exact text this
    router handed out is accepted."""
    message_id = ""
    if _CURSOR.fullmatch(cursor):
        try:
            message_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            message_id = ""
    if not _MESSAGE_ID.fullmatch(message_id) or encode_cursor(message_id) != cursor:
        raise ApiError(
            422,
            "validation_failed",
            "cursor is not one this API returned: pass next_cursor unchanged",
            param="cursor",
        )
    return message_id


async def page_of_messages(
    services: Services,
    key: ApiKey,
    filters: listing.MessageFilter,
    *,
    cursor: str | None,
    limit: int,
) -> MessageList:
    before = None if cursor is None else decode_cursor(cursor)
    page = await reads.page_of_messages(services.db, key, filters, before_id=before, limit=limit)
    last = page.messages[-1].id if page.more and page.messages else None
    return MessageList(
        data=[resource(m) for m in page.messages],
        next_cursor=None if last is None else encode_cursor(last),
    )


async def _send(
    request: Request[Any, Any, Any],
    *,
    services: Services,
    api_key: ApiKey,
    idempotency_key: str | None,
    body: SendMessageRequest | SendTemplateRequest,
    wa_id: str,
    built: content.Content,
    reply_to: str | None,
) -> Response[MessageResource]:
    """What both send routes share once the content is built: metadata, deadline,
    Idempotency-Key, then the use case."""
    accepted = await services.sending.accept(
        SendRequest(
            key=api_key,
            idempotency=await idempotency_claim(request, idempotency_key),
            valid_until=_deadline(body.valid_until, services),
            route=f"POST {request.url.path.rstrip('/')}",
            sender_id=body.sender_id,
            wa_id=wa_id,
            content=built,
            reply_to=reply_to,
            metadata=_checked(content.metadata, body.metadata or {}),
            correlation_id=correlation_of(request),
        )
    )
    return _accepted(accepted)


class MessagesController(Controller):
    path = "/v1/whatsapp/messages"
    tags = ["messages"]
    security = SECURITY

    @post(
        "/",
        operation_id="sendMessage",
        summary="Send a free-form message",
        status_code=202,
        opt={"scope": Scope.MESSAGES_SEND, "rate": "send"},
        operation_class=json_body(SendMessageRequest, description="A free-form message"),
        responses=docs.SEND,
        response_headers=docs.SEND_HEADERS,
    )
    async def send(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        api_key: NamedDependency[ApiKey],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[MessageResource]:
        """Text, reply buttons or media by link, inside the 24-hour customer service window.

        Outside the window the answer is 422 `outside_service_window` at once and nothing is
        stored: use the templates route. A 202 means the message is on disk."""
        body = await decode_body(request, _send_decoder)
        wa_id = wa_id_of(body.to)
        built = _checked(
            content.free_form,
            text=body.text,
            preview_url=body.preview_url,
            header=body.header,
            footer=body.footer,
            buttons=None
            if body.buttons is None
            else [content.ButtonSpec(id=b.id, title=b.title) for b in body.buttons],
            media=None
            if body.media is None
            else content.MediaSpec(
                kind=body.media.kind,
                url=body.media.url,
                caption=body.media.caption,
                filename=body.media.filename,
            ),
        )
        reply_to = None if body.reply_to is None else _checked(content.reply_to, body.reply_to)
        return await _send(
            request,
            services=services,
            api_key=api_key,
            idempotency_key=idempotency_key,
            body=body,
            wa_id=wa_id,
            built=built,
            reply_to=reply_to,
        )

    @get(
        "/",
        operation_id="listMessages",
        summary="List the client's messages",
        opt={"scope": Scope.MESSAGES_READ, "rate": "read"},
        responses=docs.reads(
            None, "validation_failed: param names the query parameter (limit, cursor, status, to …)"
        ),
        response_headers=docs.READ_HEADERS,
    )
    async def list_messages(
        self,
        *,
        services: NamedDependency[Services],
        api_key: NamedDependency[ApiKey],
        correlation_id: Annotated[
            str | None,
            QueryParameter(
                required=False,
                pattern=r"^[A-Za-z0-9._:\-]{1,128}$",
                description="Only messages of the request with this X-Correlation-Id",
            ),
        ] = None,
        status: Annotated[
            MessageStatus | None,
            QueryParameter(required=False, description="Only messages with this status"),
        ] = None,
        to: Annotated[
            str | None,
            QueryParameter(
                required=False,
                max_length=64,
                description="Only messages to this contact (E.164, with or without +)",
            ),
        ] = None,
        sender_id: Annotated[
            str | None,
            QueryParameter(
                required=False,
                pattern=r"^[0-9]{1,32}$",
                description="Only messages from this sender (phone_number_id)",
            ),
        ] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_PAGE, description="Page size, 1-100")
        ] = DEFAULT_PAGE,
        cursor: Annotated[
            str | None,
            QueryParameter(
                required=False,
                max_length=64,
                description="The next_cursor of the previous page, unchanged",
            ),
        ] = None,
    ) -> MessageList:
        """The client's messages, newest first, each as on the status route. Follow
        `next_cursor` (null on the last page) with the same filters to read further."""
        filters = listing.MessageFilter(
            correlation_id=correlation_id,
            status=status,
            wa_id=None if to is None else wa_id_of(to),
            sender_id=sender_id,
        )
        return await page_of_messages(services, api_key, filters, cursor=cursor, limit=limit)

    @get(
        "/{message_id:str}",
        operation_id="getMessage",
        summary="Get a message's status",
        opt={"scope": Scope.MESSAGES_READ, "rate": "read"},
        responses=docs.reads("not_found: unknown id, or a message of another client"),
        response_headers=docs.STATUS_HEADERS,
    )
    async def status(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        api_key: NamedDependency[ApiKey],
        message_id: Annotated[str, Parameter(description="msg_… id")],
        if_none_match: Annotated[
            str | None, HeaderParameter(name="If-None-Match", required=False)
        ] = None,
    ) -> Response[MessageResource]:
        """The status, its history, the attempts and any error. Sends an `ETag`
        (`If-None-Match` answers 304) and, until the status is final, `Retry-After`."""
        message = await services.sending.get(message_id, key=api_key)
        body = _encoder.encode(resource(message))
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if not is_final(message.status):
            headers["Retry-After"] = str(POLL_AFTER.get(message.status, 5))
        # The body is encoded here (not by Litestar) because the ETag is its hash.
        raw: Any = body
        if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
            return Response(content=b"", status_code=304, headers=headers)  # type: ignore[arg-type]
        return Response(content=raw, headers=headers, media_type="application/json")

    @delete(
        "/{message_id:str}",
        operation_id="cancelMessage",
        summary="Cancel a queued message",
        status_code=200,
        opt={"scope": Scope.MESSAGES_SEND, "rate": "send"},
        responses={
            **docs.reads("not_found: unknown id, or a message of another client"),
            409: docs.problem("not_cancellable: the message is being sent or has gone"),
        },
        response_headers=docs.READ_HEADERS,
    )
    async def cancel(
        self,
        services: NamedDependency[Services],
        api_key: NamedDependency[ApiKey],
        message_id: Annotated[str, Parameter(description="msg_… id")],
    ) -> MessageResource:
        """A message still waiting in the queue ends `failed` with code `cancelled` (source
        `router`) and is never sent. Once it is being sent, or has been, the answer is 409
        `not_cancellable`."""
        return resource(await services.sending.cancel(message_id, key=api_key))


class TemplatesController(Controller):
    path = "/v1/whatsapp/templates"
    tags = ["messages"]
    security = SECURITY

    @post(
        "/",
        operation_id="sendTemplate",
        summary="Send a template message",
        status_code=202,
        opt={"scope": Scope.TEMPLATES_SEND, "rate": "send"},
        operation_class=json_body(SendTemplateRequest, description="A template message"),
        responses=docs.TEMPLATE_SEND,
        response_headers=docs.SEND_HEADERS,
    )
    async def send(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        api_key: NamedDependency[ApiKey],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[MessageResource]:
        """An approved template, at any time (never window-checked). `components` is the Cloud
        API's own shape, passed through."""
        body = await decode_body(request, _template_decoder)
        wa_id = wa_id_of(body.to)
        built = _checked(
            content.template,
            name=body.template.name,
            language=body.template.language,
            components=body.template.components,
        )
        return await _send(
            request,
            services=services,
            api_key=api_key,
            idempotency_key=idempotency_key,
            body=body,
            wa_id=wa_id,
            built=built,
            reply_to=None,
        )
