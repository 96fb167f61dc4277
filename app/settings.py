"""Settings: one frozen Struct loaded once from the ``WA_ROUTER_*`` variables (API.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

import msgspec
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PREFIX = "WA_ROUTER_"
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Rate = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]


class WorkerMode(StrEnum):
    EMBEDDED = "embedded"
    OFF = "off"


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


class SettingsError(ValueError):
    """A misconfiguration; its message is the one line start-up prints."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = "sqlite+aiosqlite:///./wa-router.db"
    access_token: str | None = None
    graph_api_url: str = "https://graph.facebook.com"
    graph_api_version: str = "v25.0"
    app_secret: str | None = None
    verify_token: str | None = None
    host: str = "127.0.0.1"
    port: Port = 8080
    send_rate_per_minute: Rate = 60
    send_rate_per_hour: Rate = 0
    read_rate_per_minute: Rate = 1200
    worker: WorkerMode = WorkerMode.EMBEDDED
    lease_seconds: Annotated[int, msgspec.Meta(ge=4, le=3600)] = 30
    #: After an attempt that may have reached Meta (a timeout, a dropped connection), how long
    #: to wait for a status webhook carrying our id before sending again.
    reconcile_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 120
    #: Meta's pair rate (one business number → one customer): about one per 6 s sustained,
    #: bursts of up to 45 (cloud-api.md §6.2).
    pair_interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 6.0
    pair_burst: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 45
    log_format: LogFormat | None = None
    #: Benchmarks only: mount the reference route ``POST /bench/bare`` (app/http/bench.py).
    bench_routes: bool = False

    @property
    def sandbox(self) -> bool:
        """No access token: the Cloud API is simulated in-process."""
        return self.access_token is None

    @property
    def resolved_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON

    def check(self) -> Settings:
        """Cross-field rules; raises :class:`SettingsError` with one clear line."""
        try:
            url = make_url(self.database_url)
        except (ArgumentError, ValueError):
            raise SettingsError(
                f"{PREFIX}DATABASE_URL is not a SQLAlchemy URL: {self.database_url!r}"
            ) from None
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise SettingsError(
                f"{PREFIX}DATABASE_URL must use sqlite+aiosqlite:// or postgresql+asyncpg://, "
                f"not {url.drivername}://"
            )
        try:
            graph = urlsplit(self.graph_api_url)
        except ValueError:
            graph = urlsplit("")
        if graph.scheme not in ("http", "https") or not graph.hostname:
            raise SettingsError(
                f"{PREFIX}GRAPH_API_URL must be an http(s) URL, not {self.graph_api_url!r}"
            )
        if (
            not self.graph_api_version.startswith("v")
            or not self.graph_api_version[1:].replace(".", "", 1).isdigit()
        ):
            raise SettingsError(
                f"{PREFIX}GRAPH_API_VERSION must look like v25.0, not {self.graph_api_version!r}"
            )
        if self.access_token is not None and not self.access_token.strip():
            raise SettingsError(f"{PREFIX}ACCESS_TOKEN is set but empty")
        if not self.sandbox and not self.app_secret:
            raise SettingsError(
                f"{PREFIX}APP_SECRET is required with a real {PREFIX}ACCESS_TOKEN "
                "(it verifies Meta's webhook signatures)"
            )
        return self


_FIELDS = {name.upper(): name for name in Settings.__struct_fields__}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``WA_ROUTER_*`` from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    if env.get(PREFIX + "ACCESS_TOKEN") == "":
        # An empty token is a failed secret injection, not a request for the sandbox.
        raise SettingsError(f"{PREFIX}ACCESS_TOKEN is set but empty; unset it to run the sandbox")
    raw: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith(PREFIX) and key[len(PREFIX) :] in _FIELDS and value != "":
            raw[_FIELDS[key[len(PREFIX) :]]] = value
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = message.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in message else ""
        name = f"{PREFIX}{field.upper()}" if field else PREFIX + "*"
        raise SettingsError(f"{name}: {message.split(' - at ', maxsplit=1)[0]}") from None
    return settings.check()
