"""Operational routes: liveness, readiness, Prometheus metrics. No authentication (they are for
the orchestrator and the scraper), so they say nothing a caller could misuse: no error texts,
no addresses."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST

from app.container import Services
from app.errors import ApiError
from app.http.problems import Problem
from app.http.schemas import Health
from app.services.readiness import Readiness


class DatabaseCheck(msgspec.Struct, omit_defaults=True):
    ok: bool
    detail: str | None = None


class MigrationsCheck(msgspec.Struct):
    ok: bool
    revision: str | None
    head: str | None


class DispatcherCheck(msgspec.Struct, omit_defaults=True):
    ok: bool
    mode: str  # embedded, or off: a `wa-router worker` process sends
    heartbeat_at: datetime | None = None
    age_seconds: float | None = None


class PausedSender(msgspec.Struct):
    sender_id: str
    paused_until: datetime
    code: str | None  # Meta's error code only: this route needs no key, so no error texts


class SendersCheck(msgspec.Struct):
    ok: bool  # always true: a paused sender is information, not unreadiness
    paused: list[PausedSender]


class Checks(msgspec.Struct):
    database: DatabaseCheck
    migrations: MigrationsCheck
    dispatcher: DispatcherCheck
    senders: SendersCheck


class Ready(msgspec.Struct):
    status: str
    checks: Checks


class NotReadyProblem(Problem, omit_defaults=True):
    """503 not_ready: ``checks`` has every check's result."""

    checks: Checks | None = None


def _checks(ready: Readiness) -> Checks:
    age = ready.heartbeat_age
    return Checks(
        database=DatabaseCheck(
            ok=ready.writable,
            detail=ready.database_error
            or ("read-only (a standby in recovery)" if ready.read_only else None),
        ),
        migrations=MigrationsCheck(
            ok=ready.migrations_ok, revision=ready.revision, head=ready.head
        ),
        dispatcher=DispatcherCheck(
            ok=ready.dispatcher_ok,
            mode="embedded" if ready.embedded else "off",
            heartbeat_at=ready.heartbeat,
            age_seconds=None if age is None else round(age.total_seconds(), 3),
        ),
        senders=SendersCheck(
            ok=True,
            paused=[
                PausedSender(
                    sender_id=s.phone_number_id,
                    paused_until=s.paused_until,
                    code=(s.pause_reason or "").split(":", 1)[0] or None,
                )
                for s in ready.paused
                if s.paused_until is not None
            ],
        ),
    )


@get("/healthz", operation_id="healthz", tags=["operations"], summary="Process is up")
async def healthz() -> Health:
    """Answers 200 while the process serves HTTP."""
    return Health(status="ok")


@get(
    "/readyz",
    operation_id="readyz",
    tags=["operations"],
    summary="Ready to take traffic",
    responses={
        503: ResponseSpec(
            data_container=NotReadyProblem,
            description="not_ready: detail names the failed checks",
            media_type="application/problem+json",
            generate_examples=False,
        )
    },
)
async def readyz(services: NamedDependency[Services]) -> Ready:
    """200 when the database answers, its schema is at the migrations' head and (with
    `WA_ROUTER_WORKER=embedded`) the dispatcher's heartbeat is under 60 s old. Paused senders
    are listed under `checks.senders`, without failing readiness."""
    ready = await services.readiness.check()
    checks = _checks(ready)
    if failed := ready.failed:
        raise ApiError(
            503,
            "not_ready",
            f"failed checks: {', '.join(failed)}",
            extra={"checks": msgspec.to_builtins(checks)},
        )
    return Ready(status="ready", checks=checks)


@get(
    "/metrics",
    operation_id="metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    media_type=CONTENT_TYPE_LATEST,
)
async def metrics(services: NamedDependency[Services]) -> Response[bytes]:
    """The Prometheus text format: requests, refused sends, queue per sender, Cloud API calls,
    latencies, webhook events (all prefixed `wa_router_`)."""
    body = await services.metrics.exposition(services.db, now=services.clock())
    # As given: Litestar would append a second charset to a text/ media type.
    return Response(
        content=body, media_type=CONTENT_TYPE_LATEST, headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
