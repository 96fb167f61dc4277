"""The template catalog's use cases: sync it from the Cloud API, keep it current from Meta's
template webhooks, and check a template send against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.cloud_api.webhooks import ChangeValue
from adapters.db import templates as template_repo
from adapters.db.engine import Database
from domain.content import Template
from domain.model import Sender
from domain.ports import TemplateSource
from domain.templates import CatalogTemplate, TemplateRejected, check_template, status_after_event

_log = structlog.get_logger("wa_router.templates")

STATUS_UPDATE = "message_template_status_update"
CATEGORY_UPDATE = "template_category_update"
TEMPLATE_FIELDS = frozenset({STATUS_UPDATE, CATEGORY_UPDATE})

# The widths of the templates table's columns: longer values are not Meta's.
_NAME_MAX = 512
_LANGUAGE_MAX = 16
_ID_MAX = 32
_WORD_MAX = 32


class SyncRefused(ValueError):
    """The sender named for a sync is unknown or has no WABA id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncResult:
    waba_id: str
    templates: int
    approved: int


def wabas_to_sync(senders: Sequence[Sender], only: str | None = None) -> list[str]:
    """The distinct WABA ids to sync: of every sender that has one, or of the one named."""
    if only is not None:
        found = next((s for s in senders if s.phone_number_id == only), None)
        if found is None:
            raise SyncRefused(f"no sender {only!r} is registered")
        if not found.waba_id:
            raise SyncRefused(
                f"sender {only} has no WABA id; set one with: wa-router senders add "
                f"--phone-number-id {only} --waba-id ID"
            )
        return [found.waba_id]
    return sorted({s.waba_id for s in senders if s.waba_id})


async def sync_catalog(
    db: Database, source: TemplateSource, waba_id: str, *, now: datetime
) -> SyncResult:
    """Pull the WABA's whole catalog, then replace the stored one in one transaction (a failed
    listing changes nothing)."""
    templates = await source.list_templates(waba_id)
    async with db.write() as conn:
        await template_repo.replace_catalog(conn, waba_id, templates, now=now)
    approved = sum(1 for t in templates if t.approved)
    return SyncResult(waba_id=waba_id, templates=len(templates), approved=approved)


async def rejection(
    conn: AsyncConnection, waba_id: str | None, template: Template
) -> TemplateRejected | None:
    """Why the sender's synced catalog says Meta would refuse this send, if it does."""
    if waba_id is None:
        return None
    synced = await template_repo.catalog_synced(conn, waba_id)
    entry = (
        await template_repo.get_template(conn, waba_id, template.name, template.language)
        if synced
        else None
    )
    try:
        check_template(template, entry, catalog_synced=synced)
    except TemplateRejected as exc:
        return exc
    return None


async def approved_templates(conn: AsyncConnection, waba_id: str | None) -> list[dict[str, str]]:
    """What the 422 outside_service_window lists: the sender's approved templates."""
    if waba_id is None:
        return []
    return [
        {"name": t.name, "language": t.language, "category": t.category or ""}
        for t in await template_repo.list_approved(conn, waba_id)
    ]


class Outcome(StrEnum):
    APPLIED = "applied"
    IGNORED = "ignored"  # nothing to change (an event that does not move the status …)
    SKIPPED = "skipped"  # unreadable: no template named, values too long


def _word(value: str | None) -> str | None:
    return value.upper() if value and len(value) <= _WORD_MAX else None


async def _identify(
    conn: AsyncConnection, waba_id: str, value: ChangeValue
) -> tuple[str, str, str | None, CatalogTemplate | None] | None:
    """(name, language, template_id, stored entry) of the template a change is about."""
    template_id = None if value.message_template_id is None else str(value.message_template_id)
    name, language = value.message_template_name, value.message_template_language
    if (
        len(waba_id) > _ID_MAX
        or (template_id is not None and len(template_id) > _ID_MAX)
        or (name is not None and len(name) > _NAME_MAX)
        or (language is not None and len(language) > _LANGUAGE_MAX)
    ):
        return None
    if name and language:
        return (
            name,
            language,
            template_id,
            await template_repo.get_template(conn, waba_id, name, language),
        )
    if template_id:  # older payloads may name the template by id only
        entry = await template_repo.find_by_id(conn, waba_id, template_id)
        if entry is not None:
            return entry.name, entry.language, template_id, entry
    return None


async def apply_change(
    conn: AsyncConnection, *, field: str, waba_id: str, value: ChangeValue, now: datetime
) -> Outcome:
    """One ``message_template_status_update`` or ``template_category_update`` change (``entry.id``
    is the WABA), applied in the caller's transaction."""
    found = await _identify(conn, waba_id, value) if waba_id else None
    if found is None:
        _log.warning("template_webhook_skipped", field=field, reason="no template identified")
        return Outcome.SKIPPED
    name, language, template_id, entry = found
    if field == CATEGORY_UPDATE:
        category = _word(value.new_category)
        if category is None:
            return Outcome.SKIPPED
        if not await template_repo.set_category(
            conn, waba_id=waba_id, name=name, language=language, category=category, now=now
        ):
            return Outcome.IGNORED  # a template we do not know: its status is unknown too
        _log.info("template_category", waba_id=waba_id, name=name, language=language, to=category)
        return Outcome.APPLIED
    status = status_after_event(value.event or "", entry.status if entry else None)
    if status is None:
        return Outcome.IGNORED
    await template_repo.set_status(
        conn,
        waba_id=waba_id,
        name=name,
        language=language,
        status=status,
        template_id=template_id,
        category=_word(value.message_template_category),
        now=now,
    )
    _log.info(
        "template_status",
        waba_id=waba_id,
        name=name,
        language=language,
        template_event=(value.event or "")[:32],
        status=status,
        reason=(value.reason or "")[:200] or None,
    )
    return Outcome.APPLIED
