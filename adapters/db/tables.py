"""The schema (DESIGN.md "Data"). Alembic owns it; these models are its source of truth.

Queries are SQLAlchemy Core statements over these tables: repositories return domain values,
never ORM rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from domain.status import MessageStatus


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: dict[Any, Any] = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


class SenderRow(Base):
    __tablename__ = "senders"
    phone_number_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    waba_id: Mapped[str | None] = mapped_column(String(32))
    display_number: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(200))
    max_mps: Mapped[int] = mapped_column(Integer, default=80)
    paused_until: Mapped[datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]


class ClientRow(Base):
    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200))  # comma-separated Scope values
    senders: Mapped[str | None] = mapped_column(Text)  # comma-separated ids; NULL = every sender
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class ContactRow(Base):
    __tablename__ = "contacts"
    sender_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    wa_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_inbound_at: Mapped[datetime | None]
    window_closed_at: Mapped[datetime | None]  # Meta said closed (131047) after last_inbound_at
    next_send_at: Mapped[datetime | None]  # pair pacing: the earliest next send (GCRA)
    pair_strikes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 131056


class MessageRow(Base):
    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(40))
    sender_id: Mapped[str] = mapped_column(String(32))
    wa_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    wamid: Mapped[str | None] = mapped_column(String(200), unique=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_title: Mapped[str | None] = mapped_column(String(500))
    error_detail: Mapped[str | None] = mapped_column(Text)
    error_source: Mapped[str | None] = mapped_column(String(16))
    correlation_id: Mapped[str] = mapped_column(String(128), index=True)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    valid_until: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        # The dispatcher's claim: a sender's queued messages, oldest first.
        Index("ix_messages_queue", "status", "sender_id", "id"),
        Index("ix_messages_client_id", "client_id", "id"),
        # Per-conversation order: the oldest queued message of each (sender, contact) goes first.
        Index("ix_messages_pair", "sender_id", "wa_id", "status", "id"),
    )


class MessageEventRow(Base):
    """Append-only: every status change, attempt and request-level decision."""

    __tablename__ = "message_events"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    message_id: Mapped[str | None] = mapped_column(String(40), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(128), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(16))
    applied: Mapped[bool | None]
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class InboundMessageRow(Base):
    __tablename__ = "inbound_messages"
    wamid: Mapped[str] = mapped_column(String(200), primary_key=True)
    sender_id: Mapped[str] = mapped_column(String(32))
    wa_id: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(160))
    type: Mapped[str] = mapped_column(String(32))
    sent_at: Mapped[datetime]
    received_at: Mapped[datetime]


class OrphanStatusRow(Base):
    """A status webhook for a wamid we do not know yet; applied when the wamid becomes known."""

    __tablename__ = "orphan_statuses"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    wamid: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("wamid", "status"),)


class SenderLeaseRow(Base):
    """A sender is dispatched by one dispatcher at a time, so its pace lives in one process."""

    __tablename__ = "sender_leases"
    sender_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]


class DispatcherRow(Base):
    """Live dispatchers, so each takes a fair share of the senders."""

    __tablename__ = "dispatchers"
    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime]


class IdempotencyKeyRow(Base):
    """A completed send, replayed for the same (client, key) and body within 24 h."""

    __tablename__ = "idempotency_keys"
    client_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(40))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RateLimitRow(Base):
    """GCRA state: the theoretical arrival time of the next request, Unix nanoseconds."""

    __tablename__ = "rate_limits"
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    tat_ns: Mapped[int] = mapped_column(BigInteger)


class SandboxStateRow(Base):
    """Sandbox mode keeps its printed key here, so it stays the same across restarts."""

    __tablename__ = "sandbox_state"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TemplateRow(Base):
    """A WABA's template catalog (``wa-router templates sync``), kept current by webhooks."""

    __tablename__ = "templates"
    waba_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    language: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(32))
    parameter_format: Mapped[str] = mapped_column(String(16))
    # Meta's own components; NULL for a template known only from a status webhook.
    components: Mapped[list[Any] | None] = mapped_column(JSON)
    template_id: Mapped[str | None] = mapped_column(String(32))
    synced_at: Mapped[datetime | None]  # NULL: inserted by a webhook, not by a sync
    updated_at: Mapped[datetime]


class TemplateCatalogRow(Base):
    """One row per WABA whose catalog was synced, even when it has no templates: only then are
    template sends checked against it."""

    __tablename__ = "template_catalogs"
    waba_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    synced_at: Mapped[datetime]


def _table(model: type[Base]) -> Table:
    return cast("Table", model.__table__)


senders = _table(SenderRow)
clients = _table(ClientRow)
api_keys = _table(ApiKeyRow)
contacts = _table(ContactRow)
messages = _table(MessageRow)
message_events = _table(MessageEventRow)
inbound_messages = _table(InboundMessageRow)
orphan_statuses = _table(OrphanStatusRow)
sandbox_state = _table(SandboxStateRow)
idempotency_keys = _table(IdempotencyKeyRow)
rate_limits = _table(RateLimitRow)
sender_leases = _table(SenderLeaseRow)
dispatchers = _table(DispatcherRow)
templates = _table(TemplateRow)
template_catalogs = _table(TemplateCatalogRow)


#: 'queued' written into the statements that look for queued messages (the dispatcher's
#: claims, the backlog of /metrics), not bound: PostgreSQL may switch a prepared statement to a
#: generic plan after a few runs, and a generic plan that sees `status = $1` reckons half the
#: table matches (a bitmap scan of a sender's whole queue, then a sort, on every claim).
#: Seeing 'queued', it plans with that value's own statistics: an index walk in id order that
#: stops at the rows it takes. A constant, so nothing is spliced in from outside.
QUEUED_STATUS: ColumnElement[str] = literal_column(f"'{MessageStatus.QUEUED}'", String())
