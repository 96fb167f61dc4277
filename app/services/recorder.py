"""Recording the sends Meta accepted, many in one transaction.

With hundreds of sends in flight, answers arrive every few milliseconds; each used to be its
own write transaction of five statements (the fenced update, two events, the pair's pace read
and upsert) and its own commit. Here every answer that arrives while a batch is being written
joins the next batch: one transaction, one commit, the events in one INSERT and the pair
paces in one read and one upsert. Each caller still learns, for its own send, whether the
dispatcher held the message's lease, and only once its batch is committed.

If a batch fails, its sends are written again one by one, so that one bad row cannot cost the
others their record (a send that cannot be recorded at all raises to its caller, whose message
lease then expires: the message is sent again, as before)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from adapters.db import contacts as contact_repo
from adapters.db import outbox
from adapters.db.engine import Database
from app.services.statuses import apply_parked
from domain.pacing import PairPacing, after_pair_send

_log = structlog.get_logger("wa_router.dispatch")

#: Sends written in one transaction at most.
MAX_BATCH = 512


@dataclass(slots=True)
class _Waiting:
    send: outbox.AcceptedSend
    held: asyncio.Future[bool]


class AcceptedRecorder:
    def __init__(self, db: Database, *, pair_pacing: PairPacing) -> None:
        self._db = db
        self._pair_pacing = pair_pacing
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, send: outbox.AcceptedSend) -> bool:
        """Record ``send``; True if this dispatcher still held the message's lease. Returns
        once the record is committed (a cancelled caller's record is written all the same)."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(send, loop.create_future())
        # If our caller is cancelled meanwhile, nobody reads the outcome: mark it read.
        waiting.held.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self._queue.append(waiting)
        if self._writer is None or self._writer.done():
            # A context of its own: not the log context of the send that happened to start it.
            self._writer = loop.create_task(self._write_queued(), context=contextvars.Context())
        return await asyncio.shield(waiting.held)

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                held = await self._write([w.send for w in batch])
            except Exception as exc:  # noqa: BLE001 - retried one by one below
                if len(batch) == 1:
                    _settle(batch[0].held, exc)
                    continue
                _log.warning("accepted_batch_failed", sends=len(batch), error=repr(exc))
                for waiting in batch:
                    try:
                        (one,) = await self._write([waiting.send])
                    except Exception as again:  # noqa: BLE001 - handed to its caller
                        _settle(waiting.held, again)
                    else:
                        _settle(waiting.held, one)
                continue
            for waiting, one in zip(batch, held, strict=True):
                _settle(waiting.held, one)

    async def _write(self, sends: Sequence[outbox.AcceptedSend]) -> list[bool]:
        async with self._db.write() as conn:
            held = await outbox.record_accepted_many(conn, sends)
            # Statuses that came before their wamid was stored apply now (rarely any).
            for wamid in await contact_repo.parked_wamids(conn, [s.wamid for s in sends]):
                now = next(s.now for s in sends if s.wamid == wamid)
                await apply_parked(conn, wamid=wamid, now=now)
            pairs = [(s.job.sender_id, s.job.wa_id) for s in sends]
            paces = await contact_repo.pair_paces(conn, pairs)
            after: dict[tuple[str, str], tuple[datetime, int]] = {}
            for send, pair in zip(sends, pairs, strict=True):
                last = after[pair][0] if pair in after else paces[pair][0]
                after[pair] = (after_pair_send(last, send.now, self._pair_pacing), 0)
            await contact_repo.set_pair_paces(conn, after)
        return held


def _settle(future: asyncio.Future[bool], outcome: bool | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
