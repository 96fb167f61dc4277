"""The repositories over real SQL: SQLite (temp file) always, PostgreSQL when configured.

Every test takes ``any_db``, so each one runs once per backend. Times are explicit, timezone-aware
UTC values: the repositories never read the clock, and what goes in must come back equal and
aware on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import contacts as contact_repo
from adapters.db import idempotency as idempotency_repo
from adapters.db import keys as key_repo
from adapters.db import messages as message_repo
from adapters.db import outbox
from adapters.db.engine import Database
from adapters.db.migrate import current_revision, head_revision
from adapters.db.tables import Base
from adapters.db.tables import message_events as events_table
from adapters.db.tables import messages as messages_table
from domain.content import MessageKind
from domain.model import ErrorSource, MessageError, OutboundJob, Scope, Sender, StatusChange
from domain.status import MessageStatus
from domain.window import WindowState, window_open

# Microseconds on purpose: they must survive the round trip on both backends.
T0 = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
LEASE = timedelta(seconds=30)
SENDER = "106540352242922"
OTHER_SENDER = "106540352242999"
WA_ID = "16505551234"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def assert_same_utc(value: datetime | None, expected: datetime) -> None:
    """Equal instant, and aware in UTC (not naive, not some other offset)."""
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    assert value == expected


def wa_of(message_id: str) -> str:
    digits = "".join(c for c in message_id if c.isdigit()).rjust(4, "0")[-4:]
    return WA_ID[:-4] + digits


async def add_message(
    conn: AsyncConnection,
    message_id: str,
    *,
    now: datetime = T0,
    client_id: str = "cli_a",
    sender_id: str = SENDER,
    wa_id: str | None = None,
    kind: MessageKind = MessageKind.TEXT,
    metadata: dict[str, str] | None = None,
) -> None:
    """Each message to its own contact unless ``wa_id`` is given (one conversation is served
    strictly in order, one message at a time)."""
    wa_id = wa_id or wa_of(message_id)
    await message_repo.insert_message(
        conn,
        message_id=message_id,
        client_id=client_id,
        sender_id=sender_id,
        wa_id=wa_id,
        kind=kind,
        payload={"messaging_product": "whatsapp", "to": "+" + wa_id, "type": str(kind)},
        correlation_id=f"corr-{message_id}",
        metadata=metadata or {},
        now=now,
        request_detail={"window": "open"},
    )


async def claim(db: Database, owner: str, now: datetime, *, limit: int = 10) -> list[OutboundJob]:
    async with db.write() as conn:
        return await outbox.claim_due(
            conn, owner=owner, now=now, lease=LEASE, limit=limit, skip_locked=not db.is_sqlite
        )


def ids(jobs: Sequence[OutboundJob]) -> list[str]:
    return [job.id for job in jobs]


async def events_of(db: Database, message_id: str) -> list[tuple[str, str | None, bool | None]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(events_table.c.kind, events_table.c.status, events_table.c.applied)
            .where(events_table.c.message_id == message_id)
            .order_by(events_table.c.id)
        )
        return [(r.kind, r.status, r.applied) for r in rows]


async def row_of(db: Database, message_id: str) -> Any:
    async with db.read() as conn:
        return (
            await conn.execute(select(messages_table).where(messages_table.c.id == message_id))
        ).one()


# --- schema -----------------------------------------------------------------------------------


async def test_migrations_reach_head(any_db: Database) -> None:
    head = head_revision(any_db.url)
    assert head is not None
    async with any_db.read() as conn:
        assert await current_revision(conn) == head


async def test_migrated_schema_matches_the_models(any_db: Database) -> None:
    def differences(sync: Connection) -> list[Any]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with any_db.read() as conn:
        assert await conn.run_sync(differences) == []


# --- clients, keys, senders -------------------------------------------------------------------


async def test_client_id_for_creates_the_client_once(any_db: Database) -> None:
    async with any_db.write() as conn:
        first = await key_repo.client_id_for(conn, "acme-crm", new_id="cli_1", now=T0)
    async with any_db.write() as conn:
        again = await key_repo.client_id_for(conn, "acme-crm", new_id="cli_2", now=at(60))
        other = await key_repo.client_id_for(conn, "other-crm", new_id="cli_3", now=at(60))

    assert (first, again, other) == ("cli_1", "cli_1", "cli_3")


async def test_keys_are_stored_found_by_hash_listed_and_revoked_once(any_db: Database) -> None:
    async with any_db.write() as conn:
        client_id = await key_repo.client_id_for(conn, "acme-crm", new_id="cli_1", now=T0)
        await key_repo.insert_key(
            conn,
            key_id="key_1",
            client_id=client_id,
            secret_sha256="a" * 64,
            scopes=[Scope.MESSAGES_SEND, Scope.MESSAGES_READ],
            senders=None,
            now=T0,
        )
        await key_repo.insert_key(
            conn,
            key_id="key_2",
            client_id=client_id,
            secret_sha256="b" * 64,
            scopes=[Scope.TEMPLATES_SEND],
            senders=[SENDER, OTHER_SENDER],
            now=at(1),
        )

    async with any_db.read() as conn:
        found = await key_repo.key_by_hash(conn, "a" * 64)
        restricted = await key_repo.key_by_hash(conn, "b" * 64)
        unknown = await key_repo.key_by_hash(conn, "c" * 64)
        listed = await key_repo.list_keys(conn)

    assert unknown is None
    assert found is not None
    assert (found.id, found.client_id, found.client_name) == ("key_1", "cli_1", "acme-crm")
    assert found.scopes == frozenset({Scope.MESSAGES_SEND, Scope.MESSAGES_READ})
    assert found.senders is None
    assert found.revoked_at is None
    assert found.last_used_at is None
    assert_same_utc(found.created_at, T0)
    assert restricted is not None
    assert restricted.senders == frozenset({SENDER, OTHER_SENDER})
    assert restricted.allows_sender(SENDER)
    assert not restricted.allows_sender("999")
    assert [key.id for key in listed] == ["key_1", "key_2"]

    async with any_db.write() as conn:
        assert await key_repo.revoke_key(conn, "key_1", now=at(100))
    async with any_db.write() as conn:
        assert await key_repo.revoke_key(conn, "key_1", now=at(200))
        assert not await key_repo.revoke_key(conn, "key_404", now=at(200))
        await key_repo.touch_key(conn, "key_2", now=at(300))

    async with any_db.read() as conn:
        revoked = await key_repo.key_by_hash(conn, "a" * 64)
        touched = await key_repo.key_by_hash(conn, "b" * 64)
    assert revoked is not None
    assert_same_utc(revoked.revoked_at, at(100))
    assert touched is not None
    assert touched.revoked_at is None
    assert_same_utc(touched.last_used_at, at(300))


async def test_senders_upsert_list_and_pause(any_db: Database) -> None:
    async with any_db.write() as conn:
        created = await key_repo.upsert_sender(
            conn, Sender(phone_number_id=SENDER, name="Shop", max_mps=80), now=T0
        )
        created_other = await key_repo.upsert_sender(
            conn, Sender(phone_number_id=OTHER_SENDER, waba_id="102290129340398"), now=T0
        )
    async with any_db.write() as conn:
        await key_repo.pause_sender(conn, SENDER, until=at(3600), reason="190: token expired")
    async with any_db.write() as conn:
        updated = await key_repo.upsert_sender(
            conn,
            Sender(
                phone_number_id=SENDER,
                waba_id="102290129340398",
                display_number="+15550783881",
                name="Shop EU",
                max_mps=40,
            ),
            now=at(10),
        )

    async with any_db.read() as conn:
        listed = await key_repo.list_senders(conn)
        missing = await key_repo.get_sender(conn, "404")

    assert (created, created_other, updated) == (True, True, False)
    assert missing is None
    assert [s.phone_number_id for s in listed] == [SENDER, OTHER_SENDER]
    shop = listed[0]
    assert (shop.waba_id, shop.display_number, shop.name, shop.max_mps) == (
        "102290129340398",
        "+15550783881",
        "Shop EU",
        40,
    )
    # Re-registering a sender does not lift its pause.
    assert_same_utc(shop.paused_until, at(3600))
    assert shop.pause_reason == "190: token expired"
    assert listed[1] == Sender(phone_number_id=OTHER_SENDER, waba_id="102290129340398")


# --- messages ---------------------------------------------------------------------------------


async def test_inserted_message_reads_back_as_queued_for_its_client_only(
    any_db: Database,
) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001", metadata={"order": "A-17"})

    async with any_db.read() as conn:
        message = await message_repo.get_message(conn, "msg_001", client_id="cli_a")
        foreign = await message_repo.get_message(conn, "msg_001", client_id="cli_b")
        missing = await message_repo.get_message(conn, "msg_404", client_id="cli_a")

    assert foreign is None
    assert missing is None
    assert message is not None
    assert (message.id, message.client_id, message.sender_id, message.wa_id) == (
        "msg_001",
        "cli_a",
        SENDER,
        wa_of("msg_001"),
    )
    assert message.kind is MessageKind.TEXT
    assert message.status is MessageStatus.QUEUED
    assert message.correlation_id == "corr-msg_001"
    assert (message.attempts, message.wamid, message.error) == (0, None, None)
    assert message.metadata == {"order": "A-17"}
    assert_same_utc(message.created_at, T0)
    assert_same_utc(message.updated_at, T0)
    assert message.history == (StatusChange(status=MessageStatus.QUEUED, at=T0),)
    assert_same_utc(message.history[0].at, T0)
    assert await events_of(any_db, "msg_001") == [
        ("request", None, None),
        ("status", "queued", True),
    ]


async def test_non_utc_times_are_stored_as_the_same_instant(any_db: Database) -> None:
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    async with any_db.write() as conn:
        await add_message(conn, "msg_001", now=plus_two)
    async with any_db.read() as conn:
        message = await message_repo.get_message(conn, "msg_001", client_id="cli_a")
    assert message is not None
    assert_same_utc(message.created_at, T0)


async def test_claim_leases_due_messages_to_one_owner_until_the_lease_expires(
    any_db: Database,
) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
        await add_message(conn, "msg_002", now=at(1))

    first = await claim(any_db, "worker-a", at(5))
    while_leased = await claim(any_db, "worker-b", at(5 + 29))
    after_expiry = await claim(any_db, "worker-b", at(5 + 30))

    assert ids(first) == ["msg_001", "msg_002"]
    job = first[0]
    assert (job.sender_id, job.wa_id, job.kind, job.attempts) == (
        SENDER,
        wa_of("msg_001"),
        MessageKind.TEXT,
        0,
    )
    assert job.payload == {
        "messaging_product": "whatsapp",
        "to": "+" + wa_of("msg_001"),
        "type": "text",
    }
    assert job.correlation_id == "corr-msg_001"
    assert_same_utc(job.created_at, T0)
    assert while_leased == []
    assert ids(after_expiry) == ["msg_001", "msg_002"]
    row = await row_of(any_db, "msg_001")
    assert row.lease_owner == "worker-b"
    assert_same_utc(row.lease_expires_at, at(35) + LEASE)


async def test_claim_respects_the_limit_oldest_first(any_db: Database) -> None:
    async with any_db.write() as conn:
        for n in (3, 1, 2):
            await add_message(conn, f"msg_00{n}")

    assert ids(await claim(any_db, "worker-a", at(1), limit=2)) == ["msg_001", "msg_002"]
    assert ids(await claim(any_db, "worker-b", at(1), limit=2)) == ["msg_003"]


async def test_claim_skips_messages_not_yet_due(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001", now=at(60))

    assert await claim(any_db, "worker-a", at(60) - timedelta(microseconds=1)) == []
    assert ids(await claim(any_db, "worker-a", at(60))) == ["msg_001"]


async def test_claim_skips_paused_senders_until_the_pause_ends(any_db: Database) -> None:
    async with any_db.write() as conn:
        await key_repo.upsert_sender(conn, Sender(phone_number_id=SENDER), now=T0)
        await key_repo.upsert_sender(conn, Sender(phone_number_id=OTHER_SENDER), now=T0)
        await key_repo.pause_sender(conn, SENDER, until=at(600), reason="368: blocked")
        await add_message(conn, "msg_001", sender_id=SENDER)
        await add_message(conn, "msg_002", sender_id=OTHER_SENDER)

    assert ids(await claim(any_db, "worker-a", at(1))) == ["msg_002"]
    assert await claim(any_db, "worker-b", at(20)) == []  # paused; msg_002 leased
    # The pause ends at 600 (and msg_002's lease expired long before).
    assert ids(await claim(any_db, "worker-b", at(600))) == ["msg_001", "msg_002"]


async def test_claim_skips_messages_that_are_no_longer_queued(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
        await add_message(conn, "msg_002")
    [job, _] = await claim(any_db, "worker-a", at(1))
    async with any_db.write() as conn:
        await outbox.record_accepted(
            conn, job, wamid="wamid.A1", now=at(2), attempt={"outcome": "accepted"}
        )

    assert ids(await claim(any_db, "worker-b", at(3600))) == ["msg_002"]


async def test_record_accepted_stores_the_wamid_and_releases_the_lease(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
    [job] = await claim(any_db, "worker-a", at(1))

    async with any_db.write() as conn:
        changed = await outbox.record_accepted(
            conn, job, wamid="wamid.A1", now=at(2), attempt={"outcome": "accepted"}
        )
    async with any_db.read() as conn:
        message = await message_repo.get_message(conn, "msg_001", client_id="cli_a")

    assert changed is True
    assert message is not None
    assert message.status is MessageStatus.ACCEPTED
    assert (message.wamid, message.attempts, message.error) == ("wamid.A1", 1, None)
    assert_same_utc(message.updated_at, at(2))
    assert message.history == (
        StatusChange(status=MessageStatus.QUEUED, at=T0),
        StatusChange(status=MessageStatus.ACCEPTED, at=at(2)),
    )
    assert await events_of(any_db, "msg_001") == [
        ("request", None, None),
        ("status", "queued", True),
        ("attempt", None, None),
        ("status", "accepted", True),
    ]
    row = await row_of(any_db, "msg_001")
    assert (row.lease_owner, row.lease_expires_at) == (None, None)


async def test_record_retry_keeps_the_message_queued_until_its_next_attempt(
    any_db: Database,
) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
    [job] = await claim(any_db, "worker-a", at(1))

    async with any_db.write() as conn:
        await outbox.record_retry(
            conn,
            job,
            next_attempt_at=at(120),
            now=at(2),
            attempt={"outcome": "retry", "code": 131000},
        )
    async with any_db.read() as conn:
        message = await message_repo.get_message(conn, "msg_001", client_id="cli_a")

    assert message is not None
    assert message.status is MessageStatus.QUEUED
    assert (message.attempts, message.wamid, message.error) == (1, None, None)
    assert await events_of(any_db, "msg_001") == [
        ("request", None, None),
        ("status", "queued", True),
        ("attempt", None, None),
    ]
    row = await row_of(any_db, "msg_001")
    assert (row.lease_owner, row.lease_expires_at) == (None, None)
    assert_same_utc(row.next_attempt_at, at(120))
    # The lease was released, yet the message waits for its next attempt time.
    assert await claim(any_db, "worker-b", at(119)) == []
    [again] = await claim(any_db, "worker-b", at(120))
    assert again.attempts == 1


async def test_record_retry_without_counting_the_attempt(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
    [job] = await claim(any_db, "worker-a", at(1))

    async with any_db.write() as conn:
        await outbox.record_retry(
            conn,
            job,
            next_attempt_at=at(60),
            now=at(2),
            attempt={"outcome": "sender_paused"},
            count_attempt=False,
        )

    row = await row_of(any_db, "msg_001")
    assert row.attempts == 0
    assert_same_utc(row.next_attempt_at, at(60))


async def test_record_failed_stores_meta_error_and_a_failed_event(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
    [job] = await claim(any_db, "worker-a", at(1))
    error = MessageError(
        code=131026,
        title="Message undeliverable",
        detail="Unable to deliver message.",
        source=ErrorSource.CLOUD_API,
    )

    async with any_db.write() as conn:
        await outbox.record_failed(
            conn, job, error=error, now=at(2), attempt={"outcome": "failed", "code": 131026}
        )
    async with any_db.read() as conn:
        message = await message_repo.get_message(conn, "msg_001", client_id="cli_a")

    assert message is not None
    assert message.status is MessageStatus.FAILED
    assert message.error == error
    assert (message.attempts, message.wamid) == (1, None)
    assert message.history == (
        StatusChange(status=MessageStatus.QUEUED, at=T0),
        StatusChange(status=MessageStatus.FAILED, at=at(2)),
    )
    assert await events_of(any_db, "msg_001") == [
        ("request", None, None),
        ("status", "queued", True),
        ("attempt", None, None),
        ("status", "failed", True),
    ]
    assert await claim(any_db, "worker-b", at(3600)) == []


async def test_record_failed_by_the_router_counts_no_attempt(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
    [job] = await claim(any_db, "worker-a", at(1))
    error = MessageError(
        code="window_closed_before_send",
        title="The service window closed while the message was queued",
        detail=None,
        source=ErrorSource.ROUTER,
    )

    async with any_db.write() as conn:
        await outbox.record_failed(conn, job, error=error, now=at(2), attempt=None)
    async with any_db.read() as conn:
        message = await message_repo.get_message(conn, "msg_001", client_id="cli_a")

    assert message is not None
    assert message.status is MessageStatus.FAILED
    assert message.error == error
    assert message.attempts == 0
    assert [kind for kind, _, _ in await events_of(any_db, "msg_001")] == [
        "request",
        "status",
        "status",
    ]


async def moved_on_by_webhook(
    conn: AsyncConnection, message_id: str, status: MessageStatus, *, now: datetime, wamid: str
) -> None:
    """What a status webhook that beat our own wamid commit writes (app/services/statuses.py)."""
    await message_repo.store_wamid(conn, message_id, wamid)
    await message_repo.update_messages(
        conn, {message_id: message_repo.status_columns(status, now=now)}
    )


async def test_a_status_moved_on_by_a_webhook_is_not_downgraded(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
    [job] = await claim(any_db, "worker-a", at(1))
    # The `read` webhook (found through biz_opaque_callback_data) beats our own wamid commit.
    async with any_db.write() as conn:
        await moved_on_by_webhook(conn, "msg_001", MessageStatus.READ, now=at(2), wamid="wamid.A1")

    async with any_db.write() as conn:
        held = await outbox.record_accepted(
            conn, job, wamid="wamid.A1", now=at(3), attempt={"outcome": "accepted"}
        )
    async with any_db.read() as conn:
        message = await message_repo.get_message(conn, "msg_001", client_id="cli_a")

    assert held is True
    assert message is not None
    assert message.status is MessageStatus.READ
    assert (message.wamid, message.attempts) == ("wamid.A1", 1)
    assert ("status", "accepted", True) not in await events_of(any_db, "msg_001")
    row = await row_of(any_db, "msg_001")
    assert (row.lease_owner, row.lease_expires_at) == (None, None)


async def test_only_the_lease_holder_records_an_outcome(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
    [stale] = await claim(any_db, "worker-a", at(1))
    [current] = await claim(any_db, "worker-b", at(1) + timedelta(minutes=5))

    async with any_db.write() as conn:
        stale_held = await outbox.record_accepted(
            conn, stale, wamid="wamid.STALE", now=at(400), attempt={"outcome": "accepted"}
        )
        current_held = await outbox.record_accepted(
            conn, current, wamid="wamid.CURRENT", now=at(401), attempt={"outcome": "accepted"}
        )
    row = await row_of(any_db, "msg_001")

    assert (stale_held, current_held) == (False, True)
    assert (row.wamid, row.status, row.attempts) == ("wamid.CURRENT", "accepted", 1)


async def test_a_batch_of_sends_is_recorded_each_as_its_lease_and_status_allow(
    any_db: Database,
) -> None:
    """One batch (PostgreSQL records it with one statement for all): a queued message becomes
    accepted, one a webhook moved on keeps its status, one whose lease another dispatcher
    took is left alone."""
    async with any_db.write() as conn:
        for n in (1, 2, 3):
            await add_message(conn, f"msg_00{n}")
    jobs = {j.id: j for j in await claim(any_db, "worker-a", at(1))}
    async with any_db.write() as conn:
        await moved_on_by_webhook(conn, "msg_002", MessageStatus.READ, now=at(2), wamid="w.2")
        await conn.execute(
            update(messages_table)
            .where(messages_table.c.id == "msg_003")
            .values(lease_owner="worker-b")
        )

    async with any_db.write() as conn:
        held = await outbox.record_accepted_many(
            conn,
            [
                outbox.AcceptedSend(jobs[f"msg_00{n}"], f"w.{n}", at(3 + n), {"n": n})
                for n in (1, 2, 3)
            ],
        )
    rows = {m: await row_of(any_db, m) for m in ("msg_001", "msg_002", "msg_003")}

    assert held == [True, True, False]
    assert [(r.status, r.wamid, r.lease_owner) for r in rows.values()] == [
        ("accepted", "w.1", None),
        ("read", "w.2", None),
        ("queued", None, "worker-b"),
    ]
    assert rows["msg_001"].accepted_at == at(4)
    assert ("status", "accepted", True) in await events_of(any_db, "msg_001")
    assert ("status", "accepted", True) not in await events_of(any_db, "msg_002")


async def test_a_late_failure_does_not_downgrade_a_delivered_message(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
    [job] = await claim(any_db, "worker-a", at(1))
    async with any_db.write() as conn:
        await moved_on_by_webhook(
            conn, "msg_001", MessageStatus.DELIVERED, now=at(2), wamid="wamid.A1"
        )
        await outbox.record_failed(
            conn,
            job,
            error=MessageError(code=131000, title="x", detail=None, source=ErrorSource.CLOUD_API),
            now=at(3),
            attempt={"outcome": "failed"},
        )

    async with any_db.read() as conn:
        message = await message_repo.get_message(conn, "msg_001", client_id="cli_a")
    assert message is not None
    assert (message.status, message.error) == (MessageStatus.DELIVERED, None)


async def test_wamid_is_unique(any_db: Database) -> None:
    async with any_db.write() as conn:
        await add_message(conn, "msg_001")
        await add_message(conn, "msg_002")
    first, second = await claim(any_db, "worker-a", at(1))
    async with any_db.write() as conn:
        await outbox.record_accepted(
            conn, first, wamid="wamid.SAME", now=at(2), attempt={"outcome": "accepted"}
        )

    with pytest.raises(IntegrityError):
        async with any_db.write() as conn:
            await outbox.record_accepted(
                conn, second, wamid="wamid.SAME", now=at(3), attempt={"outcome": "accepted"}
            )

    async with any_db.read() as conn:
        found = await message_repo.status_of_wamid(conn, "wamid.SAME")
        untouched = await message_repo.get_message(conn, "msg_002", client_id="cli_a")
    assert found is not None
    assert found.id == "msg_001"
    assert untouched is not None
    assert (untouched.status, untouched.wamid) == (MessageStatus.QUEUED, None)


async def test_concurrent_claims_never_hand_out_the_same_message(any_db: Database) -> None:
    async with any_db.write() as conn:
        for n in range(20):
            await add_message(conn, f"msg_{n:03d}")

    for round_ in range(3):
        now = at(1 + round_ * 60)  # each round starts after the previous leases expired
        a, b = await asyncio.gather(
            claim(any_db, f"worker-a{round_}", now, limit=6),
            claim(any_db, f"worker-b{round_}", now, limit=6),
        )
        assert set(ids(a)).isdisjoint(ids(b))
        assert len(a) + len(b) == 12


# --- contacts, inbound messages, parked statuses ----------------------------------------------


async def test_window_state_of_an_unknown_pair_is_empty(any_db: Database) -> None:
    async with any_db.read() as conn:
        state = await contact_repo.window_state(conn, SENDER, WA_ID)
    assert state == WindowState(last_inbound_at=None, closed_at=None)


async def test_last_inbound_only_moves_forward(any_db: Database) -> None:
    async with any_db.write() as conn:
        await contact_repo.move_last_inbound(conn, SENDER, WA_ID, at(100))
    async with any_db.write() as conn:
        await contact_repo.move_last_inbound(conn, SENDER, WA_ID, at(50))  # a late redelivery
    async with any_db.read() as conn:
        after_older = await contact_repo.window_state(conn, SENDER, WA_ID)
    async with any_db.write() as conn:
        await contact_repo.move_last_inbound(conn, SENDER, WA_ID, at(200))
    async with any_db.read() as conn:
        after_newer = await contact_repo.window_state(conn, SENDER, WA_ID)
        other_pair = await contact_repo.window_state(conn, OTHER_SENDER, WA_ID)

    assert_same_utc(after_older.last_inbound_at, at(100))
    assert_same_utc(after_newer.last_inbound_at, at(200))
    assert after_newer.closed_at is None
    assert other_pair.last_inbound_at is None


async def test_mark_window_closed_keeps_last_inbound(any_db: Database) -> None:
    async with any_db.write() as conn:
        await contact_repo.mark_window_closed(conn, SENDER, "16505550000", at(10))
        await contact_repo.move_last_inbound(conn, SENDER, WA_ID, at(100))
        await contact_repo.mark_window_closed(conn, SENDER, WA_ID, at(300))

    async with any_db.read() as conn:
        never_wrote = await contact_repo.window_state(conn, SENDER, "16505550000")
        closed = await contact_repo.window_state(conn, SENDER, WA_ID)

    assert never_wrote.last_inbound_at is None
    assert_same_utc(never_wrote.closed_at, at(10))
    assert_same_utc(closed.last_inbound_at, at(100))
    assert_same_utc(closed.closed_at, at(300))


async def test_a_newer_inbound_message_reopens_a_window_meta_closed(any_db: Database) -> None:
    async with any_db.write() as conn:
        await contact_repo.move_last_inbound(conn, SENDER, WA_ID, at(100))
        await contact_repo.mark_window_closed(conn, SENDER, WA_ID, at(300))
    async with any_db.read() as conn:
        closed = await contact_repo.window_state(conn, SENDER, WA_ID)
    async with any_db.write() as conn:
        await contact_repo.move_last_inbound(conn, SENDER, WA_ID, at(400))
    async with any_db.read() as conn:
        reopened = await contact_repo.window_state(conn, SENDER, WA_ID)

    assert not window_open(closed, at(301))
    assert_same_utc(reopened.last_inbound_at, at(400))
    assert window_open(reopened, at(401))


async def test_record_inbound_is_a_no_op_on_redelivery(any_db: Database) -> None:
    inbound: dict[str, Any] = {
        "wamid": "wamid.IN1",
        "sender_id": SENDER,
        "wa_id": WA_ID,
        "user_id": "US.13491208655302741918",
        "type_": "text",
        "sent_at": at(100),
    }
    async with any_db.write() as conn:
        first = await contact_repo.record_inbound(conn, **inbound, now=at(101))
    async with any_db.write() as conn:
        again = await contact_repo.record_inbound(conn, **inbound, now=at(500))

    assert (first, again) == (True, False)


async def test_last_inbound_seen_is_the_newest_inbound_of_the_pair(any_db: Database) -> None:
    async with any_db.read() as conn:
        assert await contact_repo.last_inbound_seen(conn, SENDER, WA_ID) is None

    async with any_db.write() as conn:
        for wamid, sender_id, sent_at in (
            ("wamid.IN1", SENDER, at(100)),
            ("wamid.IN2", SENDER, at(300)),
            ("wamid.IN3", SENDER, at(200)),
            ("wamid.IN4", OTHER_SENDER, at(900)),
        ):
            await contact_repo.record_inbound(
                conn,
                wamid=wamid,
                sender_id=sender_id,
                wa_id=WA_ID,
                user_id=None,
                type_="text",
                sent_at=sent_at,
                now=at(1000),
            )

    async with any_db.read() as conn:
        seen = await contact_repo.last_inbound_seen(conn, SENDER, WA_ID)
    assert_same_utc(seen, at(300))


async def test_parked_statuses_are_idempotent_and_taken_oldest_first(any_db: Database) -> None:
    failure = {"code": 131049, "title": "This message was not delivered"}
    async with any_db.write() as conn:
        await contact_repo.park_status(
            conn, wamid="wamid.A1", status="sent", at=at(1), error=None, now=at(1)
        )
        await contact_repo.park_status(
            conn, wamid="wamid.OTHER", status="sent", at=at(1), error=None, now=at(1)
        )
        await contact_repo.park_status(
            conn, wamid="wamid.A1", status="failed", at=at(2), error=failure, now=at(2)
        )
    async with any_db.write() as conn:
        # Meta redelivers the same (wamid, status): parked once.
        await contact_repo.park_status(
            conn, wamid="wamid.A1", status="sent", at=at(1), error=None, now=at(5)
        )

    async with any_db.write() as conn:
        taken = await contact_repo.take_parked(conn, "wamid.A1")
    async with any_db.write() as conn:
        taken_again = await contact_repo.take_parked(conn, "wamid.A1")
        other = await contact_repo.take_parked(conn, "wamid.OTHER")

    assert [(status, error) for status, _, error in taken] == [
        ("sent", None),
        ("failed", failure),
    ]
    assert_same_utc(taken[0][1], at(1))
    assert_same_utc(taken[1][1], at(2))
    assert taken_again == []
    assert [status for status, _, _ in other] == ["sent"]


@pytest.mark.postgres
async def test_an_idempotency_key_is_processed_by_one_transaction_at_a_time(
    postgres_db: Database,
) -> None:
    """Across API processes the key's advisory lock is what answers 409 in progress: a second
    transaction cannot take it until the first ends; another key or client can. (SQLite has
    one writer: its lock is the write transaction itself.)"""
    async with postgres_db.write() as first:
        assert await idempotency_repo.try_lock(first, "cli_a", "order-1")
        async with postgres_db.write() as second:
            assert not await idempotency_repo.try_lock(second, "cli_a", "order-1")
            assert await idempotency_repo.try_lock(second, "cli_a", "order-2")
            assert await idempotency_repo.try_lock(second, "cli_b", "order-1")
    async with postgres_db.write() as later:
        assert await idempotency_repo.try_lock(later, "cli_a", "order-1")
