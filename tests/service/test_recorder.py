"""Accepted sends are recorded in batches: each send still gets its own answer (did this
dispatcher hold the lease?), and a send that cannot be recorded does not cost the others
theirs."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from adapters.db import contacts as contact_repo
from adapters.db import outbox
from adapters.db.tables import messages
from app.services.recorder import AcceptedRecorder
from domain.model import OutboundJob
from domain.pacing import PairPacing
from domain.status import MessageStatus
from tests.service.conftest import World


async def claimed(world: World, count: int) -> list[OutboundJob]:
    for n in range(count):
        await world.open_window(f"1415555{n:04d}")
        await world.send_text(f"m{n}", wa_id=f"1415555{n:04d}")
    async with world.db.write() as conn:
        return await outbox.claim_due(
            conn,
            owner="test-dispatcher",
            now=world.clock.now,
            lease=timedelta(seconds=30),
            limit=count,
            skip_locked=not world.db.is_sqlite,
        )


def accepted(job: OutboundJob, world: World, **attempt: object) -> outbox.AcceptedSend:
    return outbox.AcceptedSend(
        job=job,
        wamid=f"wamid.{job.id}",
        now=world.clock.now,
        attempt={"outcome": "accepted", **attempt},
    )


async def test_a_batch_answers_each_send_for_its_own_lease(world: World) -> None:
    jobs = await claimed(world, 3)
    async with world.db.write() as conn:  # another dispatcher took the second one over
        await conn.execute(
            update(messages).where(messages.c.id == jobs[1].id).values(lease_owner="other")
        )
    recorder = AcceptedRecorder(world.db, pair_pacing=PairPacing())

    held = await asyncio.gather(*(recorder.record(accepted(j, world)) for j in jobs))

    assert held == [True, False, True]
    statuses = [(await world.message(j.id)).status for j in jobs]
    assert statuses == [MessageStatus.ACCEPTED, MessageStatus.QUEUED, MessageStatus.ACCEPTED]
    assert (await world.message(jobs[0].id)).wamid == f"wamid.{jobs[0].id}"


async def test_a_send_that_cannot_be_recorded_fails_alone(world: World) -> None:
    jobs = await claimed(world, 3)
    recorder = AcceptedRecorder(world.db, pair_pacing=PairPacing())
    unstorable = accepted(jobs[1], world, detail=object())  # not JSON: its INSERT fails

    results = await asyncio.gather(
        recorder.record(accepted(jobs[0], world)),
        recorder.record(unstorable),
        recorder.record(accepted(jobs[2], world)),
        return_exceptions=True,
    )

    assert results[0] is True
    assert isinstance(results[1], Exception)
    assert results[2] is True
    statuses = [(await world.message(j.id)).status for j in jobs]
    assert statuses == [MessageStatus.ACCEPTED, MessageStatus.QUEUED, MessageStatus.ACCEPTED]


@pytest.mark.parametrize("count", [1, 40])
async def test_every_send_is_recorded_once_and_its_pair_paced(world: World, count: int) -> None:
    jobs = await claimed(world, count)
    recorder = AcceptedRecorder(world.db, pair_pacing=PairPacing())

    held = await asyncio.gather(*(recorder.record(accepted(j, world)) for j in jobs))

    assert held == [True] * count
    for job in jobs:
        message = await world.message(job.id)
        assert message.status is MessageStatus.ACCEPTED
        assert [h.status for h in message.history] == [MessageStatus.QUEUED, MessageStatus.ACCEPTED]
    async with world.db.read() as conn:
        paces = await contact_repo.pair_paces(conn, [(j.sender_id, j.wa_id) for j in jobs])
    assert all(next_send_at is not None for next_send_at, _ in paces.values())
