"""Building and tearing down what a running process needs: engines, clients, dispatcher,
janitor. Used by the HTTP app's lifespan and by ``wa-router worker``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import structlog

from adapters.cloud_api.client import DEFAULT_TIMEOUT, CloudApiClient, GraphHttp
from adapters.cloud_api.sandbox import SANDBOX_APP_SECRET, Deliver, SandboxCloudApi
from adapters.cloud_api.transport import AiohttpTransport
from adapters.db import contacts as contact_repo
from adapters.db.engine import Database
from adapters.db.migrate import upgrade_to_head
from app.container import Services
from app.metrics import Metrics
from app.services.directory import SenderDirectory
from app.services.dispatch import Dispatcher
from app.services.janitor import Janitor
from app.services.keys import KEY_CACHE_TTL_SECONDS, KeyCache
from app.services.ratelimit import Limits, RateLimiter, store_for
from app.services.readiness import ReadinessProbe
from app.services.sandbox import ensure_sandbox, retire_sandbox
from app.services.sending import SendingService
from app.settings import Settings, WorkerMode
from domain.model import Message
from domain.pacing import PairPacing
from domain.ports import CloudApi, TemplateSource
from domain.retry import RetryPolicy

_log = structlog.get_logger("wa_router")
T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (as uvicorn does for ``serve``), else on
    asyncio's own loop. A worker's loop turns for every send, its answer and its record: on
    uvloop it took 3-11 % less CPU a send."""
    try:
        import uvloop  # noqa: PLC0415 - optional: not where it does not build
    except ImportError:  # uvicorn[standard] installs it where it builds
        return asyncio.run(main)
    return uvloop.run(main)


def freeze_heap() -> None:
    """Take what a started process holds (modules, the app, engines, compiled statements) out
    of the cyclic garbage collector's sight: collect once, then freeze what survived.

    Without it, every full collection walked that whole heap, holding the event loop for tens
    of milliseconds: under 32 connections the accept route's p99 was 100-130 ms against a p50
    of 23-26 ms; frozen, 28-36 ms, and 8 % less CPU a request. Objects made later are
    collected as before. Objects frozen here are still freed when their last reference goes;
    only a cycle among them would stay (the process's own long-lived structures, which live as
    long as it does)."""
    gc.collect()
    gc.freeze()


#: Sends one dispatcher keeps in flight at most, and the Cloud API connections it may open:
#: ~1,000 messages/s (Meta's top tier) at Meta's ~100 ms distance needs ~100 in flight.
MAX_IN_FLIGHT = 256


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Tuning:
    """What tests (and benchmarks) may change; production runs on the defaults."""

    graph_transport: httpx.AsyncBaseTransport | None = None
    clock: Callable[[], datetime] = utc_now
    retry_policy: RetryPolicy | None = None
    idle_poll: float = 0.5
    sandbox_delays: tuple[float, float, float] = (0.5, 1.0, 2.0)
    key_cache_ttl: float = KEY_CACHE_TTL_SECONDS
    janitor_every: float = 300.0


def webhook_secret(settings: Settings) -> str | None:
    """The app secret, or in sandbox mode the simulator's own."""
    return settings.app_secret or (SANDBOX_APP_SECRET if settings.sandbox else None)


def cloud_api_for(
    settings: Settings,
    db: Database,
    graph_http: GraphHttp,
    *,
    deliver: Deliver,
    tuning: Tuning,
) -> CloudApi:
    """The real Cloud API client, or the sandbox simulator when there is no token."""
    if not settings.sandbox:
        return CloudApiClient(
            graph_http, token=settings.access_token or "", version=settings.graph_api_version
        )

    async def last_inbound(sender_id: str, wa_id: str) -> datetime | None:
        async with db.read() as conn:
            return await contact_repo.last_inbound_seen(conn, sender_id, wa_id)

    return SandboxCloudApi(
        deliver=deliver,
        last_inbound=last_inbound,
        clock=tuning.clock,
        app_secret=webhook_secret(settings) or SANDBOX_APP_SECRET,
        delays=tuning.sandbox_delays,
    )


def template_source_for(
    settings: Settings, db: Database, graph_http: GraphHttp, *, tuning: Tuning
) -> TemplateSource:
    """What ``wa-router templates sync`` lists catalogs from: the Cloud API, or in sandbox mode
    the simulator (a listing delivers no webhooks)."""

    async def nowhere(_body: bytes, _signature: str) -> None:
        return None

    api = cloud_api_for(settings, db, graph_http, deliver=nowhere, tuning=tuning)
    if not isinstance(api, CloudApiClient | SandboxCloudApi):  # pragma: no cover - by design
        raise TypeError(f"{type(api).__name__} cannot list templates")
    return api


def graph_client(settings: Settings, tuning: Tuning) -> GraphHttp:
    """httpx over aiohttp's pool (adapters/cloud_api/transport.py says why), one connection
    for each send the dispatcher may have in flight."""
    return GraphHttp(
        base_url=settings.graph_api_url,
        timeout=DEFAULT_TIMEOUT,
        transport=tuning.graph_transport or AiohttpTransport(max_connections=MAX_IN_FLIGHT),
    )


def http_deliver(http: httpx.AsyncClient, url: str) -> Deliver:
    """Post a signed webhook body to the router's webhook route."""

    async def deliver(body: bytes, signature: str) -> None:
        response = await http.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        )
        response.raise_for_status()

    return deliver


def new_dispatcher(
    settings: Settings,
    db: Database,
    cloud_api: CloudApi,
    tuning: Tuning,
    *,
    metrics: Metrics | None = None,
) -> Dispatcher:
    return Dispatcher(
        db,
        cloud_api,
        clock=tuning.clock,
        policy=tuning.retry_policy
        or RetryPolicy(reconcile_after=timedelta(seconds=settings.reconcile_seconds)),
        idle_poll=tuning.idle_poll,
        lease=timedelta(seconds=settings.lease_seconds),
        pair_pacing=PairPacing(
            interval=timedelta(seconds=settings.pair_interval_seconds), burst=settings.pair_burst
        ),
        metrics=metrics,
        max_in_flight=MAX_IN_FLIGHT,
    )


@asynccontextmanager
async def serving(
    app: Any,
    settings: Settings,
    tuning: Tuning,
    render: Callable[[Message], bytes],
    *,
    metrics: Metrics | None = None,
) -> AsyncIterator[Services]:
    """Everything ``serve`` runs, from migrations to the embedded dispatcher."""
    metrics = metrics or Metrics()
    db = Database(settings.database_url)
    await upgrade_to_head(db)
    graph_http = graph_client(settings, tuning)
    # In sandbox mode the simulator posts its webhooks into this very app, in-process.
    self_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://wa-router.sandbox"
    )
    cloud_api = cloud_api_for(
        settings,
        db,
        graph_http,
        deliver=http_deliver(self_http, "/v1/whatsapp/webhook"),
        tuning=tuning,
    )
    dispatcher = (
        new_dispatcher(settings, db, cloud_api, tuning, metrics=metrics)
        if settings.worker is WorkerMode.EMBEDDED
        else None
    )
    senders = SenderDirectory(db)
    services = Services(
        settings=settings,
        db=db,
        clock=tuning.clock,
        keys=KeyCache(db, clock=tuning.clock, ttl=tuning.key_cache_ttl),
        senders=senders,
        sending=SendingService(
            db,
            senders=senders,
            clock=tuning.clock,
            render=render,
            on_accepted=dispatcher.wake if dispatcher else lambda: None,
        ),
        webhook_secret=webhook_secret(settings),
        limiter=RateLimiter(store_for(db), Limits.from_settings(settings), clock=tuning.clock),
        metrics=metrics,
        readiness=ReadinessProbe(db, dispatcher=dispatcher, clock=tuning.clock),
        dispatcher=dispatcher,
        sandbox=cloud_api if isinstance(cloud_api, SandboxCloudApi) else None,
    )
    if services.sandbox is not None:
        await ensure_sandbox(services)
    else:
        await retire_sandbox(services)
    janitor = Janitor(
        db, clock=tuning.clock, every_seconds=tuning.janitor_every, limiter=services.limiter
    )
    tasks = [asyncio.create_task(janitor.run())]
    if dispatcher is not None:
        tasks.append(asyncio.create_task(dispatcher.run()))
    _log.info("started", sandbox=settings.sandbox, worker=str(settings.worker), database=db.dialect)
    try:
        yield services
    finally:
        janitor.stop()
        if dispatcher is not None:
            dispatcher.stop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
        if services.sandbox is not None:
            await services.sandbox.aclose()
        await self_http.aclose()
        await graph_http.aclose()
        await db.dispose()
