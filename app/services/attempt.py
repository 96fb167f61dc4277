"""One attempt at one claimed message: the last checks, the Cloud API call, and the recorded
outcome (accepted / retry / failed / sender paused), decided from Meta's error code."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from adapters.cloud_api.errors import CloudApiStatusError, CloudApiUnavailable
from adapters.db import contacts as contact_repo
from adapters.db import keys as key_repo
from adapters.db import outbox
from adapters.db.engine import Database
from app.metrics import Metrics
from app.services.recorder import AcceptedRecorder
from domain.content import MessageKind
from domain.errors import (
    PAIR_RATE_LIMIT,
    RE_ENGAGEMENT,
    THROUGHPUT_LIMIT,
    ErrorClass,
    classify,
    sender_pause,
)
from domain.model import ErrorSource, MessageError, OutboundJob
from domain.pacing import PairPacing, pair_backoff
from domain.ports import CloudApi
from domain.retry import RetryPolicy
from domain.window import WindowState, window_open

_log = structlog.get_logger("wa_router.dispatch")

WINDOW_CLOSED_BEFORE_SEND = MessageError(
    code="window_closed_before_send",
    title="Window closed before send",
    detail="the 24-hour customer service window closed while the message was queued; "
    "send a template instead",
    source=ErrorSource.ROUTER,
)
EXPIRED = MessageError(
    code="expired",
    title="Expired before send",
    detail="valid_until passed before the message could be sent",
    source=ErrorSource.ROUTER,
)


def _forever(now: datetime) -> datetime:
    """A pause "until resumed" is stored as a far-away time, so every query stays simple."""
    return now.replace(year=9999, month=12, day=31)


class AttemptRunner:
    def __init__(
        self,
        db: Database,
        cloud_api: CloudApi,
        *,
        clock: Callable[[], datetime],
        policy: RetryPolicy,
        pair_pacing: PairPacing,
        metrics: Metrics | None = None,
        rand: Callable[[], float] = random.random,
        on_throttled: Callable[[str], None] = lambda _sender: None,
    ) -> None:
        self._db = db
        self._cloud_api = cloud_api
        self._clock = clock
        self._policy = policy
        self._pair_pacing = pair_pacing
        self._metrics = metrics
        self._rand = rand
        self._on_throttled = on_throttled
        self._accepted = AcceptedRecorder(db, pair_pacing=pair_pacing)

    async def run(
        self,
        job: OutboundJob,
        *,
        deadline: float,
        window: WindowState | None,
        on_write: Callable[[], None] | None = None,
    ) -> None:
        """Send ``job`` once (the dispatcher already counted it in the sender's pace, and read
        ``window``, the pair's service window, with the claim: None for a template, which
        needs none; ``on_write`` hears when the request is written). Never raises: whatever
        happens is recorded (or, if even that fails, the message lease expires)."""
        with structlog.contextvars.bound_contextvars(
            correlation_id=job.correlation_id, message_id=job.id, sender_id=job.sender_id
        ):
            try:
                await self._attempt(job, on_write, deadline, window)
            except Exception as exc:  # noqa: BLE001 - one bad job must not stall the others
                _log.error("dispatch_error", error=repr(exc))
                await self._record_crash(job, exc)

    def _count(self, outcome: str, code: int | str | None = None) -> None:
        if self._metrics is not None:
            self._metrics.cloud_api_call(outcome, code)

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

    async def _fail_before_send(self, job: OutboundJob, error: MessageError) -> None:
        async with self._db.write() as conn:
            await outbox.record_failed(conn, job, error=error, now=self._clock(), attempt=None)
        _log.info("dispatch", outcome="failed", code=error.code)

    async def _attempt(
        self,
        job: OutboundJob,
        on_write: Callable[[], None] | None,
        deadline: float,
        window: WindowState | None,
    ) -> None:
        """The deadline bounds the wait for Meta only: once Meta has answered, the outcome is
        recorded however long the database takes (cutting that short would lose a wamid and
        send the message again)."""
        now = self._clock()
        if job.valid_until is not None and now >= job.valid_until:
            await self._fail_before_send(job, EXPIRED)
            return
        if job.kind is not MessageKind.TEMPLATE and not window_open(
            window or WindowState(last_inbound_at=None),
            now,  # no window known: never written
        ):
            await self._fail_before_send(job, WINDOW_CLOSED_BEFORE_SEND)
            return
        if asyncio.get_running_loop().time() >= deadline:  # the checks took the whole lease
            await self._on_unavailable(
                job,
                CloudApiUnavailable("attempt deadline before send", maybe_sent=False),
                latency=0.0,
            )
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                result = await self._cloud_api.send(job.sender_id, job.payload, on_write=on_write)
        except TimeoutError:
            await self._on_unavailable(
                job,
                CloudApiUnavailable("attempt deadline", maybe_sent=True),
                latency=time.perf_counter() - started,
            )
            return
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
        held = await self._accepted.record(
            outbox.AcceptedSend(job=job, wamid=result.wamid, now=now, attempt=attempt)
        )
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
        if exc.code == PAIR_RATE_LIMIT:
            await self._pair_limited(job, error, attempt, now=now)
            return
        if exc.code == THROUGHPUT_LIMIT:
            self._on_throttled(job.sender_id)
        kind = classify(exc.code, exc.http_status)
        if kind is ErrorClass.TRANSIENT:
            await self._retry_or_give_up(job, error, attempt, now=now)
        elif kind is ErrorClass.SENDER_WIDE:
            await self._pause_sender(job, error, attempt, now=now)
        else:
            attempt["outcome"] = "failed"
            async with self._db.write() as conn:
                await outbox.record_failed(conn, job, error=error, now=now, attempt=attempt)
                if exc.code == RE_ENGAGEMENT:
                    await contact_repo.mark_window_closed(conn, job.sender_id, job.wa_id, now)
            self._count("failed", exc.code)
            _log.info("dispatch", outcome="failed", code=exc.code, fbtrace_id=exc.fbtrace_id)

    async def _pair_limited(
        self, job: OutboundJob, error: MessageError, attempt: dict[str, Any], *, now: datetime
    ) -> None:
        """131056: too many messages to this customer. Back this pair off 4^X s (X grows with
        each refusal in a row); the sender's other conversations go on."""
        if now - job.created_at >= self._policy.max_age:
            await self._retry_or_give_up(job, error, attempt, now=now)
            return
        async with self._db.write() as conn:
            pace, strikes = await contact_repo.pair_pace(conn, job.sender_id, job.wa_id)
            until = now + pair_backoff(strikes)
            await contact_repo.set_pair_pace(
                conn,
                job.sender_id,
                job.wa_id,
                next_send_at=max(until, pace) if pace else until,
                strikes=strikes + 1,
            )
            attempt["outcome"] = "retry"
            attempt["next_attempt_at"] = until.isoformat()
            await outbox.record_retry(conn, job, next_attempt_at=until, now=now, attempt=attempt)
        self._count("retry", PAIR_RATE_LIMIT)
        _log.info(
            "dispatch",
            outcome="pair_backoff",
            code=PAIR_RATE_LIMIT,
            next_attempt_at=until.isoformat(),
        )

    async def _pause_sender(
        self, job: OutboundJob, error: MessageError, attempt: dict[str, Any], *, now: datetime
    ) -> None:
        """The number itself is blocked: pause it and keep its messages queued."""
        code = error.code if isinstance(error.code, int) else None
        cool_down = sender_pause(code)
        until = now + cool_down if cool_down is not None else _forever(now)
        attempt["outcome"] = "sender_paused"
        async with self._db.write() as conn:
            await key_repo.pause_sender(
                conn, job.sender_id, until=until, reason=f"{error.code}: {error.title}"
            )
            # Not the message's fault: its attempt is recorded, not counted against it.
            await outbox.record_retry(
                conn, job, next_attempt_at=now, now=now, attempt=attempt, count_attempt=False
            )
        self._count("sender_paused", code)
        _log.warning(
            "dispatch",
            outcome="sender_paused",
            code=error.code,
            paused_until=until.isoformat() if cool_down else "until resumed",
        )

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
                await outbox.record_failed(conn, job, error=error, now=now, attempt=attempt)
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
        delay: timedelta = self._policy.delay(attempts, self._rand())
        if ambiguous:
            # Meta may have accepted it: give its status webhook (which carries our id) time to
            # arrive before sending again, rather than risk a duplicate.
            delay = max(delay, self._policy.reconcile_after)
        next_at = now + delay
        attempt["outcome"] = "unknown" if ambiguous else "retry"
        attempt["next_attempt_at"] = next_at.isoformat()
        async with self._db.write() as conn:
            await outbox.record_retry(conn, job, next_attempt_at=next_at, now=now, attempt=attempt)
        if count:
            self._count(attempt["outcome"], attempt.get("code"))
        _log.info(
            "dispatch",
            outcome=attempt["outcome"],
            code=error.code,
            attempts=attempts,
            next_attempt_at=next_at.isoformat(),
        )
