"""Prometheus metrics (``GET /metrics``). One :class:`Metrics` per app, on its own registry (not
prometheus-client's global one), so several apps in one process never share or clash. Whatever
records takes it as an argument (None: nothing is recorded). A ``wa-router worker`` has its own,
served with ``--metrics-port``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from adapters.db import backlog
from adapters.db import keys as key_repo
from adapters.db.engine import Database

_log = structlog.get_logger("wa_router.metrics")

#: The route label of a request no route matched (its path would make the label unbounded).
UNMATCHED = "unmatched"
#: The routes that admit messages: their 4xx answers are refused admissions.
ADMISSION_ROUTES = frozenset({"/v1/whatsapp/messages", "/v1/whatsapp/templates"})
WEBHOOK_KINDS = (
    "inbound",
    "duplicate",
    "status_applied",
    "status_late",
    "status_parked",
    "ignored",
    "skipped",
    "template_update",
)
#: From a few hundred milliseconds (Meta answers at once) to the retry policy's hours.
ACCEPT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
#: From seconds (phone online) to a day (phone off; Meta keeps trying for 30 days).
DELIVERY_BUCKETS = (1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "wa_router_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.refused = Counter(
            "wa_router_admissions_refused",
            "Send requests refused with a 4xx problem, by problem code",
            ["code"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "wa_router_queue_depth",
            "Messages queued (not yet accepted by the Cloud API), per sender",
            ["sender_id"],
            registry=registry,
        )
        self.queue_oldest_age = Gauge(
            "wa_router_queue_oldest_age_seconds",
            "Age of the oldest queued message, per sender (0 when none is queued)",
            ["sender_id"],
            registry=registry,
        )
        self.sender_paused = Gauge(
            "wa_router_sender_paused",
            "1 while a sender is paused by a sender-wide Cloud API error, else 0",
            ["sender_id"],
            registry=registry,
        )
        self.cloud_api_calls = Counter(
            "wa_router_cloud_api_calls",
            "Cloud API send attempts, by outcome and Meta error code",
            ["outcome", "code"],
            registry=registry,
        )
        self.accept_latency = Histogram(
            "wa_router_accept_to_accepted_seconds",
            "From the 202 (message stored) to the Cloud API accepting it",
            buckets=ACCEPT_BUCKETS,
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "wa_router_accepted_to_delivered_seconds",
            "From the Cloud API accepting a message to its delivered webhook",
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.webhook_events = Counter(
            "wa_router_webhook_events",
            "Items of Meta's webhook batches, by what became of them",
            ["kind"],
            registry=registry,
        )
        for kind in WEBHOOK_KINDS:
            self.webhook_events.labels(kind)  # every kind is exposed, from 0

    def request(self, *, method: str, route: str | None, status: int) -> None:
        # Any caller can send any method: only the standard ones become label values.
        method = method if method in HTTP_METHODS else "other"
        self.requests.labels(method, route or UNMATCHED, str(status)).inc()

    def problem(self, *, method: str, route: str | None, status: int, code: str) -> None:
        if 400 <= status < 500 and method == "POST" and route in ADMISSION_ROUTES:
            self.refused.labels(code).inc()

    def cloud_api_call(self, outcome: str, code: int | str | None) -> None:
        self.cloud_api_calls.labels(outcome, "none" if code is None else str(code)).inc()

    def webhook_ingested(self, counts: Mapping[str, int], delivered_after: Iterable[float]) -> None:
        for kind, count in counts.items():
            if count:
                self.webhook_events.labels(kind).inc(count)
        for seconds in delivered_after:
            self.delivery_latency.observe(seconds)

    def set_queue(self, queued: Sequence[backlog.QueuedBySender], *, now: datetime) -> None:
        self.queue_depth.clear()
        self.queue_oldest_age.clear()
        for row in queued:
            self.queue_depth.labels(row.sender_id).set(row.depth)
            age = 0.0 if row.oldest is None else (now - row.oldest).total_seconds()
            self.queue_oldest_age.labels(row.sender_id).set(max(age, 0.0))

    async def exposition(self, db: Database, *, now: datetime) -> bytes:
        """The text format, with the queue read from the database now. A failing database
        leaves the queue gauges out and the rest of the scrape intact."""
        try:
            async with db.read() as conn:
                queued = await backlog.queued_by_sender(conn)
                senders = await key_repo.list_senders(conn)
        except (SQLAlchemyError, OSError) as exc:
            _log.warning("metrics_queue_unavailable", error=type(exc).__name__)
            queued, senders = [], []
        # No await between the update and the rendering: concurrent scrapes cannot interleave.
        self.set_queue(queued, now=now)
        self.sender_paused.clear()
        for sender in senders:
            paused = sender.paused_until is not None and sender.paused_until > now
            self.sender_paused.labels(sender.phone_number_id).set(1 if paused else 0)
        return generate_latest(self.registry)


STATE_KEY = "metrics"


def metrics_of(state: Any) -> Metrics | None:
    """The app's metrics, from Litestar's application state (``app.state``)."""
    found = state.get(STATE_KEY)
    return found if isinstance(found, Metrics) else None
