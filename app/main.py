"""The composition root: the only place that reads settings and builds adapters.

``create_app()`` works with no arguments and opens no connections: the engine, the httpx
client and the dispatcher are made in the lifespan, so the CLI can load the app to export
OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware

from app.http.auth import provide_api_key, provide_services
from app.http.bench import bench_bare
from app.http.contacts import ContactsController
from app.http.messages import MessagesController, TemplatesController, render
from app.http.middleware import correlation_middleware
from app.http.openapi import openapi_config
from app.http.ops import healthz, metrics, readyz
from app.http.problems import EXCEPTION_HANDLERS
from app.http.sandbox import SandboxController
from app.http.support import SupportController
from app.http.webhook import WebhookController
from app.logs import configure_logging
from app.metrics import STATE_KEY, Metrics
from app.runtime import Tuning, serving
from app.settings import Settings, load_settings

MAX_BODY_BYTES = 64 * 1024
_log = structlog.get_logger("wa_router")


def create_app(
    settings: Settings | None = None,
    *,
    tuning: Tuning | None = None,
    configure_logs: bool = True,
) -> Litestar:
    settings = settings or load_settings()
    tuning = tuning or Tuning()
    if configure_logs:
        configure_logging(settings.resolved_log_format)
    # Per app, not prometheus-client's global registry: apps in one process never clash.
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with serving(app, settings, tuning, render, metrics=app_metrics) as services:
            app.state["services"] = services
            yield

    route_handlers: list[object] = [
        MessagesController,
        TemplatesController,
        ContactsController,
        SupportController,
        WebhookController,
        healthz,
        readyz,
        metrics,
    ]
    if settings.sandbox:
        route_handlers.append(SandboxController)
    if settings.bench_routes:  # benchmarks only; never in the OpenAPI document
        route_handlers.append(bench_bare)
    return Litestar(
        route_handlers=route_handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        middleware=[DefineMiddleware(correlation_middleware, metrics=app_metrics)],
        state=State({STATE_KEY: app_metrics}),  # for the problem+json handlers
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "api_key": Provide(provide_api_key),
        },
        openapi_config=openapi_config(),
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # app/logs.py configures logging once
        debug=False,
    )
