"""The composition root: the only place that reads settings and builds adapters.

``create_app()`` works with no arguments and opens no connections: the engine, the httpx
client and the dispatcher are made in the lifespan, so the CLI can load the app to export
OpenAPI."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from litestar import Litestar
from litestar.di import Provide

from adapters.cloud_api.client import DEFAULT_TIMEOUT, CloudApiClient
from adapters.cloud_api.sandbox import SANDBOX_APP_SECRET, SandboxCloudApi
from adapters.db import contacts as contact_repo
from adapters.db.engine import Database
from adapters.db.migrate import upgrade_to_head
from app.container import Services
from app.http.auth import provide_api_key, provide_services
from app.http.messages import MessagesController, TemplatesController
from app.http.middleware import correlation_middleware
from app.http.openapi import openapi_config
from app.http.ops import healthz
from app.http.problems import EXCEPTION_HANDLERS
from app.http.sandbox import SandboxController
from app.http.webhook import WebhookController
from app.logs import configure_logging
from app.services.directory import SenderDirectory
from app.services.dispatch import Dispatcher
from app.services.keys import KEY_CACHE_TTL_SECONDS, KeyCache
from app.services.sandbox import ensure_sandbox
from app.services.sending import SendingService
from app.settings import Settings, WorkerMode, load_settings
from domain.ports import CloudApi
from domain.retry import RetryPolicy

MAX_BODY_BYTES = 64 * 1024
_log = structlog.get_logger("wa_router")


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings | None = None,
    *,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], datetime] = utc_now,
    retry_policy: RetryPolicy | None = None,
    idle_poll: float = 0.5,
    sandbox_delays: tuple[float, float, float] = (0.5, 1.0, 2.0),
    key_cache_ttl: float = KEY_CACHE_TTL_SECONDS,
    configure_logs: bool = True,
) -> Litestar:
    settings = settings or load_settings()
    if configure_logs:
        configure_logging(settings.resolved_log_format)
    webhook_secret = settings.app_secret or (SANDBOX_APP_SECRET if settings.sandbox else None)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        await upgrade_to_head(db)
        graph_http = httpx.AsyncClient(
            base_url=settings.graph_api_url,
            timeout=DEFAULT_TIMEOUT,
            transport=graph_transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self_http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://wa-router.sandbox",
        )
        senders = SenderDirectory(db)
        keys = KeyCache(db, clock=clock, ttl=key_cache_ttl)
        dispatcher: Dispatcher | None = None
        sandbox: SandboxCloudApi | None = None
        cloud_api: CloudApi
        if settings.sandbox:

            async def deliver(body: bytes, signature: str) -> None:
                response = await self_http.post(
                    "/v1/whatsapp/webhook",
                    content=body,
                    headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
                )
                response.raise_for_status()

            async def last_inbound(sender_id: str, wa_id: str) -> datetime | None:
                async with db.read() as conn:
                    return await contact_repo.last_inbound_seen(conn, sender_id, wa_id)

            sandbox = SandboxCloudApi(
                deliver=deliver,
                last_inbound=last_inbound,
                clock=clock,
                app_secret=webhook_secret or SANDBOX_APP_SECRET,
                delays=sandbox_delays,
            )
            cloud_api = sandbox
        else:
            cloud_api = CloudApiClient(
                graph_http, token=settings.access_token or "", version=settings.graph_api_version
            )
        if settings.worker is WorkerMode.EMBEDDED:
            dispatcher = Dispatcher(
                db,
                cloud_api,
                clock=clock,
                policy=retry_policy,
                idle_poll=idle_poll,
                lease=timedelta(seconds=settings.lease_seconds),
            )
        services = Services(
            settings=settings,
            db=db,
            clock=clock,
            keys=keys,
            senders=senders,
            sending=SendingService(
                db,
                senders=senders,
                clock=clock,
                on_accepted=dispatcher.wake if dispatcher else lambda: None,
            ),
            webhook_secret=webhook_secret,
            dispatcher=dispatcher,
            sandbox=sandbox,
        )
        app.state["services"] = services
        if sandbox is not None:
            await ensure_sandbox(services)
        task = asyncio.create_task(dispatcher.run()) if dispatcher else None
        _log.info(
            "started", sandbox=settings.sandbox, worker=str(settings.worker), database=db.dialect
        )
        try:
            yield
        finally:
            if dispatcher is not None and task is not None:
                dispatcher.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=20)
            if sandbox is not None:
                await sandbox.aclose()
            await self_http.aclose()
            await graph_http.aclose()
            await db.dispose()

    route_handlers: list[object] = [
        MessagesController,
        TemplatesController,
        WebhookController,
        healthz,
    ]
    if settings.sandbox:
        route_handlers.append(SandboxController)
    return Litestar(
        route_handlers=route_handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        middleware=[correlation_middleware],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "api_key": Provide(provide_api_key),
        },
        openapi_config=openapi_config(),
        request_max_body_size=MAX_BODY_BYTES,
        debug=False,
    )
