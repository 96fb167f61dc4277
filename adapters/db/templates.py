"""The template catalog: one WABA's templates, replaced by a sync and kept current by webhooks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.tables import template_catalogs as _catalogs
from adapters.db.tables import templates as _templates
from domain.templates import APPROVED, CatalogTemplate, parameter_format

#: How many approved templates a 422 outside_service_window lists at most.
APPROVED_LIST_MAX = 50


def _insert(conn: AsyncConnection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _template(row: Row[tuple[object, ...]]) -> CatalogTemplate:
    m = row._mapping
    components = m["components"]
    return CatalogTemplate(
        name=m["name"],
        language=m["language"],
        status=m["status"],
        category=m["category"],
        parameter_format=parameter_format(m["parameter_format"]),
        components=None if components is None else tuple(components),
        template_id=m["template_id"],
    )


async def replace_catalog(
    conn: AsyncConnection, waba_id: str, templates: Sequence[CatalogTemplate], *, now: datetime
) -> None:
    """The WABA's catalog becomes exactly ``templates`` (Meta's answer to a full listing), and
    the WABA counts as synced from now on."""
    await conn.execute(delete(_templates).where(_templates.c.waba_id == waba_id))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for t in templates:  # one row per name+language, the last listed winning
        rows[(t.name, t.language)] = {
            "waba_id": waba_id,
            "name": t.name,
            "language": t.language,
            "status": t.status,
            "category": t.category,
            "parameter_format": str(t.parameter_format),
            "components": None if t.components is None else [dict(c) for c in t.components],
            "template_id": t.template_id,
            "synced_at": now,
            "updated_at": now,
        }
    if rows:
        await conn.execute(_templates.insert(), list(rows.values()))
    stmt = _insert(conn, _catalogs).values(waba_id=waba_id, synced_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[_catalogs.c.waba_id], set_={"synced_at": now})
    )


async def catalog_synced(conn: AsyncConnection, waba_id: str) -> bool:
    found = await conn.scalar(select(_catalogs.c.waba_id).where(_catalogs.c.waba_id == waba_id))
    return found is not None


async def get_template(
    conn: AsyncConnection, waba_id: str, name: str, language: str
) -> CatalogTemplate | None:
    row = (
        await conn.execute(
            select(_templates).where(
                _templates.c.waba_id == waba_id,
                _templates.c.name == name,
                _templates.c.language == language,
            )
        )
    ).first()
    return None if row is None else _template(row)


async def find_by_id(
    conn: AsyncConnection, waba_id: str, template_id: str
) -> CatalogTemplate | None:
    row = (
        await conn.execute(
            select(_templates)
            .where(_templates.c.waba_id == waba_id, _templates.c.template_id == template_id)
            .limit(1)
        )
    ).first()
    return None if row is None else _template(row)


async def list_approved(
    conn: AsyncConnection, waba_id: str, *, limit: int = APPROVED_LIST_MAX
) -> list[CatalogTemplate]:
    rows = await conn.execute(
        select(_templates)
        .where(_templates.c.waba_id == waba_id, _templates.c.status == APPROVED)
        .order_by(_templates.c.name, _templates.c.language)
        .limit(limit)
    )
    return [_template(row) for row in rows]


async def set_status(
    conn: AsyncConnection,
    *,
    waba_id: str,
    name: str,
    language: str,
    status: str,
    template_id: str | None,
    category: str | None,
    now: datetime,
) -> None:
    """Move one template to ``status``; a template we did not know is added without components
    (its name and status are checked, its parameters are not)."""
    changes: dict[str, Any] = {"status": status, "updated_at": now}
    if category:
        changes["category"] = category
    stmt = _insert(conn, _templates).values(
        waba_id=waba_id,
        name=name,
        language=language,
        status=status,
        category=category or None,
        parameter_format="POSITIONAL",
        components=None,
        template_id=template_id,
        synced_at=None,
        updated_at=now,
    )
    if template_id:
        changes["template_id"] = template_id
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[_templates.c.waba_id, _templates.c.name, _templates.c.language],
            set_=changes,
        )
    )


async def set_category(
    conn: AsyncConnection,
    *,
    waba_id: str,
    name: str,
    language: str,
    category: str,
    now: datetime,
) -> bool:
    """Meta recategorised a template; False when we do not know it (nothing to update)."""
    result = await conn.execute(
        update(_templates)
        .where(
            _templates.c.waba_id == waba_id,
            _templates.c.name == name,
            _templates.c.language == language,
        )
        .values(category=category, updated_at=now)
    )
    return bool(result.rowcount)
