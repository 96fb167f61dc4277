"""The dispatcher: claims due messages with a lease, sends them through the Cloud API port,
records every attempt, and decides retry / fail / pause from Meta's error code.

Leases are fenced: an outcome is recorded only while this dispatcher still holds the lease, and
every attempt ends (deadline) well before the lease would expire, so a slow Meta cannot make a
second dispatcher send the same message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from adapters.cloud_api.errors import CloudApiStatusError, CloudApiUnavailable
from adapters.db import contacts as contact_repo
from adapters.db import keys as key_repo
from adapters.db import messages as message_repo
from adapters.db.engine import Database
from app import ids
from app.metrics import Metrics
from app.services.statuses import apply_parked
from domain.content import MessageKind
from domain.errors import RE_ENGAGEMENT, ErrorClass, classify
from domain.model import ErrorSource, MessageError, OutboundJob
from domain.ports import CloudApi
from domain.retry import RetryPolicy
from domain.window import window_open

_log = structlog.get_logger("wa_router.dispatch")

WINDOW_CLOSED_BEFORE_SEND = MessageError(
    code="window_closed_before_send",
    title="Window closed before send",
    detail="the 24-hour customer service window closed while the message was queued; "
    "send a template instead",
    source=ErrorSource.ROUTER,
)
#: Share of the lease an attempt may use, counted from the claim.
ATTEMPT_SHARE_OF_LEASE = 0.75
#: How often the heartbeat (``/readyz``) is refreshed, idle or while a batch is being sent.
HEARTBEAT_EVERY_SECONDS = 5.0


def default_owner() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{ids.ulid()[-6:]}"


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
        concurrency: int = 32,
        idle_poll: float = 0.5,
        rand: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
        heartbeat_every: float = HEARTBEAT_EVERY_SECONDS,
    ) -> None:
        self._db = db
        self._cloud_api = cloud_api
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self.owner = owner or default_owner()
        self._lease = lease
        self._concurrency = concurrency
        self._idle_poll = idle_poll
        self._rand = rand
        self._metrics = metrics
        self._heartbeat_every = heartbeat_every
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self.heartbeat: datetime | None = None

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Claim and send until :meth:`stop`; a failing database only delays, never ends it."""
        _log.info("dispatcher_started", owner=self.owner)
        while not self._stopping.is_set():
            self.heartbeat = self._clock()
            try:
                claimed = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                _log.error("dispatch_loop_error", error=repr(exc))
                claimed = 0
                await asyncio.sleep(1.0)
            if claimed == 0 and not self._stopping.is_set():
                await self._idle()
        _log.info("dispatcher_stopped", owner=self.owner)

    async def _idle(self) -> None:
        """Wait ``idle_poll`` or until woken, beating meanwhile."""
        self._wakeup.clear()
        loop = asyncio.get_running_loop()
        until = loop.time() + self._idle_poll
        while (left := until - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), min(left, self._heartbeat_every))
                return
            self.heartbeat = self._clock()

    async def run_once(self) -> int:
        """Claim as many due messages as can be sent at once, send them; returns how many were
        claimed (a claimed message never waits for a free slot while its lease runs)."""
        now = self._clock()
        async with self._db.read() as conn:
            if not await message_repo.any_due(conn, now=now):
                return 0
        async with self._db.write() as conn:
            jobs = await message_repo.claim_due(
                conn,
                owner=self.owner,
                now=now,
                lease=self._lease,
                limit=self._concurrency,
                skip_locked=not self._db.is_sqlite,
            )
        deadline = asyncio.get_running_loop().time() + (
            self._lease.total_seconds() * ATTEMPT_SHARE_OF_LEASE
        )
        tasks = [asyncio.create_task(self._guarded(job, deadline)) for job in jobs]
        try:
            pending = set(tasks)
            while pending:  # every attempt ends by the deadline: beating here is not lying
                self.heartbeat = self._clock()
                _, pending = await asyncio.wait(pending, timeout=self._heartbeat_every)
        finally:
            for task in tasks:  # cancelled ourselves: so are the attempts (as gather would)
                task.cancel()
        return len(jobs)

    def _count(self, outcome: str, code: int | str | None = None) -> None:
        """One Cloud API attempt, counted once its outcome is recorded."""
        if self._metrics is not None:
            self._metrics.cloud_api_call(outcome, code)

    async def _guarded(self, job: OutboundJob, deadline: float) -> None:
        with structlog.contextvars.bound_contextvars(
            correlation_id=job.correlation_id, message_id=job.id, sender_id=job.sender_id
        ):
            try:
                async with asyncio.timeout_at(deadline):
                    await self._dispatch(job)
            except TimeoutError:
                await self._on_unavailable(
                    job, CloudApiUnavailable("attempt deadline", maybe_sent=True), latency=0.0
                )
            except Exception as exc:  # noqa: BLE001 - one bad job must not stall the others
                _log.error("dispatch_error", error=repr(exc))
                await self._record_crash(job, exc)

    async def _record_crash(self, job: OutboundJob, exc: Exception) -> None:
        """Count the failed attempt, so a message that always crashes us ends ``failed``."""
        error = MessageError(
            code="router_error",
            title="Dispatch failed",
            detail=type(exc).__name__,
            source=ErrorSource.ROUTER,
        )
        try:
            await self._retry_or_give_up(
                job,
                error,
                {"outcome": "error", "error": type(exc).__name__},
                now=self._clock(),
                ambiguous=True,
                count=False,
            )
        except Exception as again:  # noqa: BLE001 - its lease expires and it is claimed again
            _log.error("dispatch_error_unrecorded", error=repr(again))
        self._count("error")

    async def _dispatch(self, job: OutboundJob) -> None:
        now = self._clock()
        if job.kind is not MessageKind.TEMPLATE:
            async with self._db.read() as conn:
                state = await contact_repo.window_state(conn, job.sender_id, job.wa_id)
            if not window_open(state, now):
                async with self._db.write() as conn:
                    await message_repo.record_failed(
                        conn, job, error=WINDOW_CLOSED_BEFORE_SEND, now=now, attempt=None
                    )
                _log.info("dispatch", outcome="failed", code=WINDOW_CLOSED_BEFORE_SEND.code)
                return
        started = time.perf_counter()
        try:
            result = await self._cloud_api.send(job.sender_id, job.payload)
        except CloudApiStatusError as exc:
            await self._on_status_error(job, exc, latency=time.perf_counter() - started)
            return
        except CloudApiUnavailable as exc:
            await self._on_unavailable(job, exc, latency=time.perf_counter() - started)
            return
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        now = self._clock()
        attempt = {
            "outcome": "accepted",
            "http_status": 200,
            "wamid": result.wamid,
            "latency_ms": latency_ms,
        }
        async with self._db.write() as conn:
            held = await message_repo.record_accepted(
                conn, job, wamid=result.wamid, now=now, attempt=attempt
            )
            await apply_parked(conn, wamid=result.wamid, now=now)
        self._count("accepted")
        if not held:
            _log.warning("dispatch_lease_lost", wamid=result.wamid)
            return
        if self._metrics is not None:
            self._metrics.accept_latency.observe(max((now - job.created_at).total_seconds(), 0.0))
        _log.info(
            "dispatch",
            outcome="accepted",
            wamid=result.wamid,
            latency_ms=latency_ms,
            attempts=job.attempts + 1,
        )

    async def _on_status_error(
        self, job: OutboundJob, exc: CloudApiStatusError, *, latency: float
    ) -> None:
        now = self._clock()
        kind = classify(exc.code, exc.http_status)
        attempt: dict[str, Any] = {
            "http_status": exc.http_status,
            "code": exc.code,
            "title": exc.title,
            "fbtrace_id": exc.fbtrace_id,
            "latency_ms": round(latency * 1000, 1),
        }
        error = MessageError(
            code=exc.code if exc.code is not None else f"http_{exc.http_status}",
            title=exc.title,
            detail=exc.details,
            source=ErrorSource.CLOUD_API,
        )
        if kind is ErrorClass.TRANSIENT:
            await self._retry_or_give_up(job, error, attempt, now=now)
            return
        if kind is ErrorClass.SENDER_WIDE:
            until = now + self._policy.sender_pause
            attempt["outcome"] = "sender_paused"
            async with self._db.write() as conn:
                await key_repo.pause_sender(
                    conn, job.sender_id, until=until, reason=f"{error.code}: {exc.title}"
                )
                await message_repo.record_retry(
                    conn, job, next_attempt_at=until, now=now, attempt=attempt
                )
            self._count("sender_paused", exc.code)
            _log.warning(
                "dispatch",
                outcome="sender_paused",
                code=exc.code,
                fbtrace_id=exc.fbtrace_id,
                paused_until=until.isoformat(),
            )
            return
        attempt["outcome"] = "failed"
        async with self._db.write() as conn:
            await message_repo.record_failed(conn, job, error=error, now=now, attempt=attempt)
            if exc.code == RE_ENGAGEMENT:
                await contact_repo.mark_window_closed(conn, job.sender_id, job.wa_id, now)
        self._count("failed", exc.code)
        _log.info("dispatch", outcome="failed", code=exc.code, fbtrace_id=exc.fbtrace_id)

    async def _on_unavailable(
        self, job: OutboundJob, exc: CloudApiUnavailable, *, latency: float
    ) -> None:
        attempt: dict[str, Any] = {
            "http_status": None,
            "code": None,
            "title": exc.reason,
            "maybe_sent": exc.maybe_sent,
            "latency_ms": round(latency * 1000, 1),
        }
        error = MessageError(
            code="cloud_api_unreachable",
            title="Cloud API unreachable",
            detail=exc.reason,
            source=ErrorSource.ROUTER,
        )
        await self._retry_or_give_up(
            job, error, attempt, now=self._clock(), ambiguous=exc.maybe_sent
        )

    async def _retry_or_give_up(
        self,
        job: OutboundJob,
        error: MessageError,
        attempt: dict[str, Any],
        *,
        now: datetime,
        ambiguous: bool = False,
        count: bool = True,
    ) -> None:
        """``count=False``: the caller counts the attempt under its own outcome."""
        attempts = job.attempts + 1
        if self._policy.gives_up(attempts=attempts, created_at=job.created_at, now=now):
            attempt["outcome"] = "failed"
            async with self._db.write() as conn:
                await message_repo.record_failed(conn, job, error=error, now=now, attempt=attempt)
            if count:
                self._count("failed", attempt.get("code"))
            _log.warning(
                "dispatch",
                outcome="failed",
                code=error.code,
                attempts=attempts,
                reason="retries exhausted",
            )
            return
        delay = self._policy.delay(attempts, self._rand())
        if ambiguous:
            # Meta may have accepted it: give its status webhook (which carries our id) time to
            # arrive before sending again, rather than risk a duplicate.
            delay = max(delay, self._policy.reconcile_after)
        next_at = now + delay
        attempt["outcome"] = "unknown" if ambiguous else "retry"
        attempt["next_attempt_at"] = next_at.isoformat()
        async with self._db.write() as conn:
            await message_repo.record_retry(
                conn, job, next_attempt_at=next_at, now=now, attempt=attempt
            )
        if count:
            self._count(attempt["outcome"], attempt.get("code"))
        _log.info(
            "dispatch",
            outcome=attempt["outcome"],
            code=error.code,
            attempts=attempts,
            next_attempt_at=next_at.isoformat(),
        )
