"""Accepting a message: sender and window decided, then the message and its first events are
committed in one transaction before the caller hears 202."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from adapters.cloud_api.payloads import message_payload
from adapters.db import contacts as contact_repo
from adapters.db import messages as message_repo
from adapters.db.engine import Database
from app import ids
from app.http.problems import ApiError
from app.services.directory import SenderDirectory
from domain.content import Content, MessageKind, summary
from domain.model import ApiKey, Message, StatusChange
from domain.status import MessageStatus
from domain.window import WindowClosed, decide_send

TEMPLATES_URL = "/v1/whatsapp/templates"


def _rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def outside_window(decision: WindowClosed) -> ApiError:
    if decision.last_inbound_at is None:
        detail = (
            "the customer has never written to this sender, so only a template can reach "
            "them: use the templates route"
        )
    else:
        detail = (
            "more than 24 hours have passed since the customer last wrote; only a template "
            "can reach them now: use the templates route"
        )
    return ApiError(
        422,
        "outside_service_window",
        detail,
        param="to",
        extra={
            "last_inbound_at": _rfc3339(decision.last_inbound_at),
            "window_closed_at": _rfc3339(decision.window_closed_at),
            "templates_url": TEMPLATES_URL,
        },
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest:
    key: ApiKey
    route: str
    sender_id: str | None
    wa_id: str
    content: Content
    reply_to: str | None
    metadata: Mapping[str, str]
    correlation_id: str


class SendingService:
    def __init__(
        self,
        db: Database,
        *,
        senders: SenderDirectory,
        clock: Callable[[], datetime],
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._senders = senders
        self._clock = clock
        self._on_accepted = on_accepted

    async def accept(self, request: SendRequest) -> Message:
        sender_id = await self._senders.resolve(request.key, request.sender_id)
        now = self._clock()
        message_id = ids.message_id()
        payload = message_payload(
            request.content,
            wa_id=request.wa_id,
            reply_to=request.reply_to,
            callback_data=message_id,
        )
        request_detail: dict[str, object] = {
            "route": request.route,
            "client_id": request.key.client_id,
            "key_id": request.key.id,
            "status_code": 202,
            "kind": str(request.content.kind),
            "summary": summary(request.content),
        }
        async with self._db.write() as conn:
            if request.content.kind is not MessageKind.TEMPLATE:
                state = await contact_repo.window_state(conn, sender_id, request.wa_id)
                decision = decide_send(state, now)
                if isinstance(decision, WindowClosed):
                    raise outside_window(decision)
                request_detail["window"] = {
                    "open": True,
                    "last_inbound_at": _rfc3339(decision.last_inbound_at),
                }
            await message_repo.insert_message(
                conn,
                message_id=message_id,
                client_id=request.key.client_id,
                sender_id=sender_id,
                wa_id=request.wa_id,
                kind=request.content.kind,
                payload=payload,
                correlation_id=request.correlation_id,
                metadata=request.metadata,
                now=now,
                request_detail=request_detail,
            )
        self._on_accepted()
        return Message(
            id=message_id,
            client_id=request.key.client_id,
            sender_id=sender_id,
            wa_id=request.wa_id,
            kind=request.content.kind,
            status=MessageStatus.QUEUED,
            correlation_id=request.correlation_id,
            created_at=now,
            updated_at=now,
            metadata=dict(request.metadata),
            history=(StatusChange(status=MessageStatus.QUEUED, at=now),),
        )

    async def get(self, message_id: str, *, key: ApiKey) -> Message:
        async with self._db.read() as conn:
            message = await message_repo.get_message(conn, message_id, client_id=key.client_id)
        if message is None:
            raise ApiError(404, "not_found", f"no message {message_id[:64]!r} for this client")
        return message
