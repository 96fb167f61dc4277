"""Ingesting Meta's webhooks: inbound messages open the window, statuses move messages on,
template changes keep the catalog current. The whole batch is one transaction, committed before
we answer 200."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.cloud_api.webhooks import (
    Contact,
    InboundMessage,
    Status,
    WebhookPayload,
    meta_time,
)
from adapters.db import contacts as contact_repo
from adapters.db import messages as message_repo
from adapters.db.engine import Database
from app.services import templates as template_service
from app.services.statuses import StatusWrites, apply_parked, apply_status
from domain.status import WEBHOOK_STATUSES, MessageStatus

_log = structlog.get_logger("wa_router.webhook")

#: Inbound types that are not the customer writing to us: they do not open the window.
#: Meta documents "messages or calls"; reactions and system notices are left out to stay on the
#: safe side (a wrongly open window means a 131047 failure later, a closed one only a 422 now).
NOT_CUSTOMER_MESSAGES = frozenset({"system", "reaction", "revoke", "ephemeral", "errors"})


#: The longest wamid we read (Meta's are about 60 characters).
MAX_WAMID = 200


class BadWebhook(ValueError):
    """A signed payload we cannot interpret (Meta will retry; we log it)."""


@dataclass(slots=True)
class IngestReport:
    inbound: int = 0
    duplicates: int = 0
    statuses_applied: int = 0
    statuses_late: int = 0
    statuses_parked: int = 0
    ignored: int = 0
    skipped: int = 0
    #: message_template_status_update and template_category_update changes applied.
    template_updates: int = 0
    #: Seconds from accepted to delivered, for each message this batch moved to delivered.
    delivered_after: list[float] = field(default_factory=list)

    def as_log(self) -> dict[str, int]:
        return {
            name: value for name in self.__slots__ if isinstance(value := getattr(self, name), int)
        }

    def by_kind(self) -> dict[str, int]:
        """The counts under the metric's ``kind`` labels."""
        return {
            "inbound": self.inbound,
            "duplicate": self.duplicates,
            "status_applied": self.statuses_applied,
            "status_late": self.statuses_late,
            "status_parked": self.statuses_parked,
            "ignored": self.ignored,
            "skipped": self.skipped,
            "template_update": self.template_updates,
        }


def _fits(value: str | None, limit: int, what: str) -> str | None:
    if value is not None and len(value) > limit:
        raise BadWebhook(f"{what} is longer than {limit} characters")
    return value


def _time(timestamp: str) -> datetime:
    try:
        return meta_time(timestamp)
    except (ValueError, OverflowError, OSError) as exc:
        raise BadWebhook(f"timestamp {timestamp[:32]!r} is not Unix seconds") from exc


async def ingest(db: Database, payload: WebhookPayload, *, now: datetime) -> IngestReport:
    """Store every item of the batch in one transaction. An item we cannot read (a bad
    timestamp, say) is skipped and logged: refusing the batch would make Meta redeliver it for
    seven days and lose the good items with it."""
    report = IngestReport()
    async with db.write() as conn:
        batch = _StatusBatch(await message_repo.statuses_of_wamids(conn, _status_wamids(payload)))
        for entry in payload.entry:
            for change in entry.changes:
                value = change.value
                if change.field in template_service.TEMPLATE_FIELDS and value is not None:
                    outcome = await template_service.apply_change(
                        conn, field=change.field, waba_id=entry.id, value=value, now=now
                    )
                    if outcome is template_service.Outcome.APPLIED:
                        report.template_updates += 1
                    elif outcome is template_service.Outcome.SKIPPED:
                        report.skipped += 1
                    else:
                        report.ignored += 1
                    continue
                if change.field != "messages" or value is None:
                    report.ignored += 1
                    continue
                sender_id = value.metadata.phone_number_id if value.metadata else ""
                if not sender_id:
                    _log.warning("webhook_item_skipped", reason="no metadata.phone_number_id")
                    report.skipped += 1
                    continue
                contact = value.contacts[0] if value.contacts else None
                for message in value.messages:
                    try:
                        await _inbound(conn, sender_id, message, contact, now=now, report=report)
                    except BadWebhook as exc:
                        _log.warning(
                            "webhook_item_skipped", wamid=message.id[:200], reason=str(exc)
                        )
                        report.skipped += 1
                for status in value.statuses:
                    try:
                        await _status(conn, sender_id, status, now=now, report=report, batch=batch)
                    except BadWebhook as exc:
                        _log.warning("webhook_item_skipped", wamid=status.id[:200], reason=str(exc))
                        report.skipped += 1
                for error in value.errors:
                    _log.warning(
                        "webhook_error", sender_id=sender_id, code=error.code, title=error.title
                    )
        await batch.writes.flush(conn)
    return report


def _status_wamids(payload: WebhookPayload) -> list[str]:
    return sorted(
        {
            status.id
            for entry in payload.entry
            for change in entry.changes
            if change.field == "messages" and change.value is not None
            for status in change.value.statuses
            if status.status in WEBHOOK_STATUSES and len(status.id) <= MAX_WAMID
        }
    )


@dataclass(slots=True)
class _StatusBatch:
    """The messages a batch's statuses name, read in one query, and their status as the batch
    moves them on; the writes wait in ``writes`` (app/services/statuses.py)."""

    known: dict[str, message_repo.StatusRow]
    current: dict[str, MessageStatus] = field(default_factory=dict)
    writes: StatusWrites = field(default_factory=StatusWrites)


async def _inbound(
    conn: AsyncConnection,
    sender_id: str,
    message: InboundMessage,
    contact: Contact | None,
    *,
    now: datetime,
    report: IngestReport,
) -> None:
    wa_id = _fits(message.from_ or (contact.wa_id if contact else None), 32, "from")
    user_id = _fits(message.from_user_id or (contact.user_id if contact else None), 160, "user_id")
    _fits(message.id, 200, "id")
    at = _time(message.timestamp)
    new = await contact_repo.record_inbound(
        conn,
        wamid=message.id,
        sender_id=sender_id,
        wa_id=wa_id,
        user_id=user_id,
        type_=message.type[:32],
        sent_at=at,
        now=now,
    )
    if not new:
        report.duplicates += 1
        return
    report.inbound += 1
    if wa_id and message.type not in NOT_CUSTOMER_MESSAGES:
        await contact_repo.move_last_inbound(conn, sender_id, wa_id, at)


async def _status(
    conn: AsyncConnection,
    sender_id: str,
    status: Status,
    *,
    now: datetime,
    report: IngestReport,
    batch: _StatusBatch,
) -> None:
    if status.status not in WEBHOOK_STATUSES:
        report.ignored += 1  # "played", group statuses …: nothing to move
        return
    incoming = MessageStatus(status.status)
    _fits(status.id, MAX_WAMID, "id")
    at = _time(status.timestamp)
    error: dict[str, Any] | None = None
    if status.errors:
        first = status.errors[0]
        error = {
            "code": first.code,
            "title": first.title or first.message,
            "details": first.error_data.details if first.error_data else None,
        }
    known = batch.known.get(status.id)
    if known is not None:  # the common case: a message we sent, its wamid stored
        current = batch.current.get(known.id, MessageStatus(known.status))
        moved = await apply_status(
            conn,
            known,
            current=current,
            incoming=incoming,
            at=at,
            error=error,
            now=now,
            writes=batch.writes,
        )
        if moved is not None:
            batch.current[known.id] = moved
        _count(report, moved, known.accepted_at, at)
        return
    # Everything else reads messages back: what the batch has changed must be written first.
    await batch.writes.flush(conn)
    row = await message_repo.status_of_wamid(conn, status.id)
    wamid_to_store = None
    callback = status.biz_opaque_callback_data
    if row is None and callback and callback.startswith("msg_"):
        # The status beat our own commit of the wamid: our id came back with it.
        row = await message_repo.status_of_id(conn, callback, sender_id)
        wamid_to_store = status.id
    if row is None:
        await contact_repo.park_status(
            conn, wamid=status.id, status=status.status, at=at, error=error, now=now
        )
        report.statuses_parked += 1
        return
    new = await apply_status(
        conn,
        row,
        current=MessageStatus(row.status),
        incoming=incoming,
        at=at,
        error=error,
        now=now,
        wamid=wamid_to_store,
    )
    if wamid_to_store is not None:
        # The wamid is known now: statuses parked for it earlier apply too.
        await apply_parked(conn, wamid=wamid_to_store, now=now)
    _count(report, new, row.accepted_at, at)


def _count(
    report: IngestReport, new: MessageStatus | None, accepted_at: datetime | None, at: datetime
) -> None:
    if new is None:
        report.statuses_late += 1
    else:
        report.statuses_applied += 1
    if new is MessageStatus.DELIVERED and accepted_at is not None:
        # Meta's timestamps are whole seconds: never below zero.
        report.delivered_after.append(max((at - accepted_at).total_seconds(), 0.0))
