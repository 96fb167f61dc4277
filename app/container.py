"""What the request handlers and the CLI work with, built once in the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from adapters.cloud_api.sandbox import SandboxCloudApi
from adapters.db.engine import Database
from app.metrics import Metrics
from app.services.directory import SenderDirectory
from app.services.dispatch import Dispatcher
from app.services.keys import KeyCache
from app.services.ratelimit import RateLimiter
from app.services.readiness import ReadinessProbe
from app.services.sending import SendingService
from app.settings import Settings


@dataclass(slots=True, kw_only=True)
class Services:
    settings: Settings
    db: Database
    clock: Callable[[], datetime]
    keys: KeyCache
    senders: SenderDirectory
    sending: SendingService
    webhook_secret: str | None
    limiter: RateLimiter
    metrics: Metrics
    readiness: ReadinessProbe
    dispatcher: Dispatcher | None = None
    sandbox: SandboxCloudApi | None = None
