"""The router's entities as plain values. Repositories return these, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.content import MessageKind
from domain.status import MessageStatus


class Scope(StrEnum):
    MESSAGES_SEND = "messages:send"
    TEMPLATES_SEND = "templates:send"
    MESSAGES_READ = "messages:read"
    SUPPORT_READ = "support:read"


ALL_SCOPES = frozenset(Scope)


class ErrorSource(StrEnum):
    CLOUD_API = "cloud_api"
    ROUTER = "router"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sender:
    phone_number_id: str
    waba_id: str | None = None
    display_number: str | None = None
    name: str | None = None
    max_mps: int = 80
    paused_until: datetime | None = None
    pause_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    id: str
    client_id: str
    client_name: str
    scopes: frozenset[Scope]
    senders: frozenset[str] | None  # None: every sender
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def allows_sender(self, sender_id: str) -> bool:
        return self.senders is None or sender_id in self.senders


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageError:
    code: int | str
    title: str
    detail: str | None
    source: ErrorSource


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChange:
    status: MessageStatus
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: str
    client_id: str
    sender_id: str
    wa_id: str
    kind: MessageKind
    status: MessageStatus
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    wamid: str | None = None
    error: MessageError | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    history: tuple[StatusChange, ...] = ()
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundJob:
    """A message claimed by a dispatcher: what it needs to send it."""

    id: str
    sender_id: str
    wa_id: str
    kind: MessageKind
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    correlation_id: str
    lease_owner: str  # the dispatcher holding it; every outcome is recorded only by this owner
    valid_until: datetime | None = None  # not sent after this: fails ``expired`` instead
