"""The template catalog repository over real SQL: SQLite (temp file) always, PostgreSQL when
configured."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from adapters.db import templates as template_repo
from adapters.db.engine import Database
from adapters.db.tables import templates as templates_table
from domain.templates import CatalogTemplate, ParameterFormat

T0 = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
WABA = "102290129340398"
OTHER_WABA = "102290129340399"

BODY = {"type": "BODY", "text": "Hi {{1}}, order {{2}} has shipped", "example": {"x": [["a"]]}}


def template(
    name: str, language: str = "en_US", status: str = "APPROVED", **kw: object
) -> CatalogTemplate:
    values: dict[str, object] = {
        "name": name,
        "language": language,
        "status": status,
        "category": "UTILITY",
        "components": (BODY,),
        "template_id": str(zlib.crc32(f"{name}/{language}".encode())),
    }
    values.update(kw)
    return CatalogTemplate(**values)  # type: ignore[arg-type]


async def test_sync_replaces_the_whole_catalog_of_one_waba(any_db: Database) -> None:
    async with any_db.write() as conn:
        assert not await template_repo.catalog_synced(conn, WABA)
        await template_repo.replace_catalog(
            conn, WABA, [template("old_one"), template("order_shipped")], now=T0
        )
        await template_repo.replace_catalog(conn, OTHER_WABA, [template("elsewhere")], now=T0)
    later = T0 + timedelta(hours=1)
    named = template(
        "reminder",
        parameter_format=ParameterFormat.NAMED,
        components=({"type": "BODY", "text": "Hi {{first_name}}"},),
        category=None,
    )
    async with any_db.write() as conn:
        await template_repo.replace_catalog(
            conn, WABA, [template("order_shipped", status="PAUSED"), named], now=later
        )

    async with any_db.read() as conn:
        assert await template_repo.catalog_synced(conn, WABA)
        assert await template_repo.get_template(conn, WABA, "old_one", "en_US") is None
        shipped = await template_repo.get_template(conn, WABA, "order_shipped", "en_US")
        stored_named = await template_repo.get_template(conn, WABA, "reminder", "en_US")
        elsewhere = await template_repo.get_template(conn, OTHER_WABA, "elsewhere", "en_US")
        synced_at = await conn.scalar(
            select(templates_table.c.synced_at).where(templates_table.c.name == "reminder")
        )

    assert shipped == template("order_shipped", status="PAUSED")
    assert stored_named == named
    assert elsewhere is not None
    assert synced_at == later


async def test_an_empty_catalog_still_counts_as_synced(any_db: Database) -> None:
    async with any_db.write() as conn:
        await template_repo.replace_catalog(conn, WABA, [], now=T0)
        await template_repo.replace_catalog(conn, WABA, [], now=T0 + timedelta(minutes=1))

    async with any_db.read() as conn:
        assert await template_repo.catalog_synced(conn, WABA)
        assert not await template_repo.catalog_synced(conn, OTHER_WABA)
        assert await template_repo.list_approved(conn, WABA) == []


async def test_one_row_per_name_and_language_when_meta_lists_one_twice(any_db: Database) -> None:
    async with any_db.write() as conn:
        await template_repo.replace_catalog(
            conn,
            WABA,
            [template("dup", status="PENDING"), template("dup"), template("dup", "pt_BR")],
            now=T0,
        )
    async with any_db.read() as conn:
        approved = await template_repo.list_approved(conn, WABA)

    assert [(t.name, t.language) for t in approved] == [("dup", "en_US"), ("dup", "pt_BR")]


async def test_list_approved_is_sorted_limited_and_per_waba(any_db: Database) -> None:
    catalog = [
        template("zeta"),
        template("alpha", "pt_BR"),
        template("alpha", "en_US"),
        template("paused_one", status="PAUSED"),
        template("pending_one", status="PENDING"),
        *(template(f"bulk_{i:03d}") for i in range(60)),
    ]
    async with any_db.write() as conn:
        await template_repo.replace_catalog(conn, WABA, catalog, now=T0)
        await template_repo.replace_catalog(conn, OTHER_WABA, [template("other")], now=T0)

    async with any_db.read() as conn:
        approved = await template_repo.list_approved(conn, WABA)
        few = await template_repo.list_approved(conn, WABA, limit=3)

    assert len(approved) == 50
    assert [(t.name, t.language) for t in few] == [
        ("alpha", "en_US"),
        ("alpha", "pt_BR"),
        ("bulk_000", "en_US"),
    ]
    names = [t.name for t in approved]
    assert names == sorted(names)
    assert "paused_one" not in names
    assert "other" not in names


async def test_status_updates_keep_components_and_add_unknown_templates(any_db: Database) -> None:
    async with any_db.write() as conn:
        await template_repo.replace_catalog(conn, WABA, [template("order_shipped")], now=T0)
        await template_repo.set_status(
            conn,
            waba_id=WABA,
            name="order_shipped",
            language="en_US",
            status="PAUSED",
            template_id=None,
            category=None,
            now=T0,
        )
        await template_repo.set_status(
            conn,
            waba_id=WABA,
            name="brand_new",
            language="es",
            status="APPROVED",
            template_id="99887766",
            category="MARKETING",
            now=T0,
        )

    async with any_db.read() as conn:
        paused = await template_repo.get_template(conn, WABA, "order_shipped", "en_US")
        added = await template_repo.get_template(conn, WABA, "brand_new", "es")
        by_id = await template_repo.find_by_id(conn, WABA, "99887766")

    assert paused == template("order_shipped", status="PAUSED")
    assert added == CatalogTemplate(
        name="brand_new",
        language="es",
        status="APPROVED",
        category="MARKETING",
        components=None,
        template_id="99887766",
    )
    assert by_id == added


async def test_category_updates_only_known_templates(any_db: Database) -> None:
    async with any_db.write() as conn:
        await template_repo.replace_catalog(conn, WABA, [template("order_shipped")], now=T0)
        known = await template_repo.set_category(
            conn,
            waba_id=WABA,
            name="order_shipped",
            language="en_US",
            category="MARKETING",
            now=T0,
        )
        unknown = await template_repo.set_category(
            conn, waba_id=WABA, name="nope", language="en_US", category="MARKETING", now=T0
        )

    async with any_db.read() as conn:
        stored = await template_repo.get_template(conn, WABA, "order_shipped", "en_US")

    assert (known, unknown) == (True, False)
    assert stored is not None
    assert stored.category == "MARKETING"
