"""The dispatcher: holds sender leases, claims due messages at each sender's pace, and sends
them through the Cloud API port (app/services/attempt.py records each outcome).

- A sender is leased to one dispatcher at a time, so its pace lives in this process: at most
  ``max_mps`` sends in any 1-second window (halved for a minute after a 130429), each counted
  from its claim until a window after it was written (see :class:`SendSlot`).
- Per conversation, messages go strictly in acceptance order at the pair's pace (the claim
  query only offers the oldest queued message of each pair, when its pace allows).
- Message leases are fenced and every attempt ends at 75 % of its lease, counted from the claim,
  so a slow Meta cannot make a second dispatcher send the same message.
- Sender leases are renewed every third of a lease, during a long pass too, and a dispatcher
  claims for its senders only while more than a third of their lease is left: one whose
  renewals are late (a slow database) stops sending before another can take its senders over,
  so two dispatchers never send for one sender at once. A sender given back is free a pace
  window after its last send, so its next holder's first second holds the pace too.
- Sends run as tasks, up to ``max_in_flight`` at once: throughput at Meta's distance (~100 ms)
  needs many requests in flight, not batches."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from adapters.db import contacts as contact_repo
from adapters.db import leases as lease_repo
from adapters.db import outbox
from adapters.db.engine import Database
from app import ids
from app.metrics import Metrics
from app.services.attempt import AttemptRunner
from domain.content import MessageKind
from domain.model import OutboundJob
from domain.pacing import PairPacing, next_send_time
from domain.ports import CloudApi
from domain.retry import RetryPolicy
from domain.window import WindowState

_log = structlog.get_logger("wa_router.dispatch")

#: Share of the lease an attempt may use, counted from the claim.
ATTEMPT_SHARE_OF_LEASE = 0.75
#: How often the heartbeat (``/readyz``) is refreshed, idle or busy.
HEARTBEAT_EVERY_SECONDS = 5.0
#: Meta counts per second; a few milliseconds of margin absorb scheduling and network jitter.
PACE_WINDOW_SECONDS = 1.005
#: After a 130429 the sender is held to half its rate for this long.
THROTTLE_SECONDS = 60.0
#: Sender leases are renewed every this share of a lease; a dispatcher claims for its senders
#: only while more than this share is left.
LEASE_GUARD_SHARE = 1 / 3


def default_owner() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{ids.ulid()[-6:]}"


class SendSlot:
    """One send's place in its sender's window. Meta counts a message when it arrives, which
    can be well after the send started (the event loop is busy, a connection is being set up
    or waited for): so the place is taken at the claim and dated when the request is written
    to the connection, as the Cloud API adapter reports, or else (a transport that cannot
    tell) when the attempt ends. Until then it counts as arriving at any moment."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = math.inf

    def written(self) -> None:
        """The request is being written now (again, if a connection failed before)."""
        now = asyncio.get_running_loop().time()
        self.at = now if self.at == math.inf else max(self.at, now)

    def ended(self) -> None:
        if self.at == math.inf:
            self.at = asyncio.get_running_loop().time()


class SenderPace:
    """This sender's recent sends, and the rule over them: at most ``limit`` in any window."""

    def __init__(self, max_mps: int) -> None:
        self.max_mps = max_mps
        self.slow_until = 0.0
        self._slots: list[SendSlot] = []

    def limit(self, now: float) -> int:
        return max(1, self.max_mps // 2) if now < self.slow_until else self.max_mps

    def _trim(self, now: float) -> None:
        self._slots = [slot for slot in self._slots if slot.at > now - PACE_WINDOW_SECONDS]

    def available(self, now: float) -> int:
        self._trim(now)
        return max(self.limit(now) - len(self._slots), 0)

    def next_start(self, now: float) -> float:
        """When one more send fits (``inf``: once a send in flight is written or ends)."""
        self._trim(now)
        return next_send_time(
            sorted(slot.at for slot in self._slots), now, self.limit(now), PACE_WINDOW_SECONDS
        )

    def take(self) -> SendSlot:
        """Count one more send, from now on (the caller checked :meth:`available`)."""
        slot = SendSlot()
        self._slots.append(slot)
        return slot


class Dispatcher:
    def __init__(
        self,
        db: Database,
        cloud_api: CloudApi,
        *,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        owner: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        max_in_flight: int = 256,
        idle_poll: float = 0.5,
        rand: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
        heartbeat_every: float = HEARTBEAT_EVERY_SECONDS,
        pair_pacing: PairPacing | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self.owner = owner or default_owner()
        self._lease = lease
        self._max_in_flight = max_in_flight
        self._idle_poll = idle_poll
        self._heartbeat_every = heartbeat_every
        self._runner = AttemptRunner(
            db,
            cloud_api,
            clock=clock,
            policy=policy or RetryPolicy(),
            pair_pacing=pair_pacing or PairPacing(),
            metrics=metrics,
            rand=rand,
            on_throttled=self._throttle,
        )
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._paces: dict[str, SenderPace] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._task_senders: dict[asyncio.Task[None], str] = {}
        self._renew_at = 0.0
        self._eager_at = 0.0
        #: When our sender leases end, as of their last renewal (the clock of the database rows).
        self._leases_until: datetime | None = None
        self.heartbeat: datetime | None = None

    @property
    def senders(self) -> frozenset[str]:
        """The senders this dispatcher holds."""
        return frozenset(self._paces)

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    def _throttle(self, sender_id: str) -> None:
        if (pace := self._paces.get(sender_id)) is not None:
            pace.slow_until = asyncio.get_running_loop().time() + THROTTLE_SECONDS
            _log.warning("sender_throttled", sender_id=sender_id, max_mps=pace.limit(0.0))

    async def run(self) -> None:
        """Dispatch until :meth:`stop`; a failing database only delays, never ends it."""
        _log.info("dispatcher_started", owner=self.owner)
        try:
            while not self._stopping.is_set():
                self.heartbeat = self._clock()
                try:
                    started, wait = await self._pump()
                except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                    _log.error("dispatch_loop_error", error=repr(exc))
                    started, wait = 0, 1.0
                if started == 0 and not self._stopping.is_set():
                    await self._idle(wait)
        finally:
            await self._drain()
        _log.info("dispatcher_stopped", owner=self.owner)

    async def run_once(self) -> int:
        """One pass with fresh leases, waiting for the sends it started (tests, tools)."""
        self._renew_at = self._eager_at = 0.0
        started, _ = await self._pump()
        await self._wait_for_tasks()
        return started

    async def _pump(self) -> tuple[int, float]:
        """Start what the paces allow; returns (sends started, how long to wait if none)."""
        loop = asyncio.get_running_loop()
        now = self._clock()
        async with self._db.read() as conn:
            due = await outbox.due_senders(conn, now=now)
        unheld = not set(due) <= set(self._paces)
        if loop.time() >= self._renew_at or (unheld and loop.time() >= self._eager_at):
            # New senders with work are looked at within a second (not on every pass: other
            # dispatchers may hold them).
            self._eager_at = loop.time() + 1.0
            await self._renew_leases(now, due)
        wait = self._idle_poll
        if not set(due) <= set(self._paces):
            wait = min(wait, self._eager_at - loop.time())
        started = 0
        for sender_id in due:
            if loop.time() >= self._renew_at:  # a long pass must not outlive our leases
                await self._renew_leases(self._clock(), due)
            pace = self._paces.get(sender_id)
            free = self._max_in_flight - len(self._tasks)
            if pace is None or free <= 0 or not self._leases_hold():
                continue
            room = min(pace.available(loop.time()), free)
            if room == 0:
                wait = min(wait, pace.next_start(loop.time()) - loop.time())
                continue
            async with self._db.write() as conn:
                jobs = await outbox.claim_due(
                    conn,
                    owner=self.owner,
                    now=self._clock(),
                    lease=self._lease,
                    limit=room,
                    skip_locked=not self._db.is_sqlite,
                    sender_id=sender_id,
                )
                # Their windows, in the same query for all of them (each send checks its own).
                windows = await contact_repo.window_states(
                    conn,
                    [(j.sender_id, j.wa_id) for j in jobs if j.kind is not MessageKind.TEMPLATE],
                )
            deadline = loop.time() + self._lease.total_seconds() * ATTEMPT_SHARE_OF_LEASE
            for job in jobs:
                self._start(job, pace, deadline, windows.get((job.sender_id, job.wa_id)))
            started += len(jobs)
        return started, max(wait, 0.001)

    def _pace_over(self) -> datetime:
        """When the last pace window of a sender with no send in flight is over."""
        return self._clock() + timedelta(seconds=PACE_WINDOW_SECONDS)

    def _leases_hold(self) -> bool:
        """More than :data:`LEASE_GUARD_SHARE` of our sender leases is left."""
        if self._leases_until is None:
            return False
        return self._clock() < self._leases_until - self._lease * LEASE_GUARD_SHARE

    async def _renew_leases(self, now: datetime, due: list[str]) -> None:
        """Keep our senders and take free ones, up to a fair share: the senders with work,
        divided by the live dispatchers. A dispatcher holding more than its share gives back
        the idle ones, so a new worker gets some at its next renewal."""
        async with self._db.write() as conn:
            await lease_repo.lock(conn)
            live = await lease_repo.heartbeat(
                conn, owner=self.owner, now=now, live_since=now - self._lease
            )
            others = await lease_repo.leased_elsewhere(conn, owner=self.owner, now=now)
            mine = set(self._paces)
            total = max(len(set(due) | mine | others), 1)
            share = math.ceil(total / live)
            excess = len(mine) - share
            if excess > 0:
                busy = set(self._task_senders.values())
                idle = sorted(s for s in mine if s not in busy)[:excess]
                await lease_repo.release(
                    conn, owner=self.owner, sender_ids=idle, free_from=self._pace_over()
                )
                mine -= set(idle)
            wanted = [*sorted(mine), *sorted(set(due) - mine)]
            held = await lease_repo.acquire(
                conn,
                wanted,
                owner=self.owner,
                now=now,
                expires_at=now + self._lease,
                limit=max(share, len(mine)),
            )
        for sender_id in set(self._paces) - set(held):
            del self._paces[sender_id]  # given back, or another dispatcher holds it now
        for sender_id, max_mps in held.items():
            pace = self._paces.setdefault(sender_id, SenderPace(max_mps))
            pace.max_mps = max_mps
        self._leases_until = now + self._lease
        self._renew_at = (
            asyncio.get_running_loop().time() + self._lease.total_seconds() * LEASE_GUARD_SHARE
        )

    def _start(
        self, job: OutboundJob, pace: SenderPace, deadline: float, window: WindowState | None
    ) -> None:
        slot = pace.take()
        task = asyncio.create_task(
            self._runner.run(job, deadline=deadline, on_write=slot.written, window=window)
        )
        self._tasks.add(task)
        self._task_senders[task] = job.sender_id

        def done(finished: asyncio.Task[None]) -> None:
            slot.ended()
            self._tasks.discard(finished)
            self._task_senders.pop(finished, None)
            self._wakeup.set()  # a slot is free, and the pair's next message may be due

        task.add_done_callback(done)

    async def _idle(self, wait: float) -> None:
        """Wait ``wait`` seconds or until woken, beating meanwhile."""
        self._wakeup.clear()
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while (left := until - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), min(left, self._heartbeat_every))
                return
            self.heartbeat = self._clock()

    async def _wait_for_tasks(self) -> None:
        while self._tasks:
            self.heartbeat = self._clock()
            await asyncio.wait(set(self._tasks), timeout=self._heartbeat_every)

    async def _drain(self) -> None:
        """On stop: let the sends in flight finish (each ends by its deadline), then give the
        senders back so another dispatcher can take them at once."""
        try:
            await self._wait_for_tasks()
        finally:
            for task in self._tasks:
                task.cancel()
            try:
                async with self._db.write() as conn:
                    await lease_repo.lock(conn)
                    await lease_repo.release(conn, owner=self.owner, free_from=self._pace_over())
            except Exception as exc:  # noqa: BLE001 - the leases then simply expire
                _log.warning("sender_leases_not_released", error=repr(exc))
            self._paces.clear()
