"""``wa-router``: serve, worker, migrate, senders, keys, templates, trace, openapi (API.md
"Command line"). The senders and keys commands are in app/cli_admin.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import structlog
import uvicorn
from prometheus_client import start_http_server
from sqlalchemy.exc import SQLAlchemyError

from adapters.cloud_api.errors import CloudApiError
from adapters.cloud_api.sandbox import SandboxCloudApi
from adapters.db import keys as key_repo
from adapters.db.engine import Database
from app.cli_admin import (
    CliError,
    digits,
    keys_create,
    keys_list,
    keys_revoke,
    migrated_db,
    senders_add,
    senders_list,
    senders_resume,
)
from app.http.support import trace_resource
from app.logs import configure_logging
from app.main import create_app
from app.metrics import Metrics
from app.runtime import (
    Tuning,
    cloud_api_for,
    freeze_heap,
    graph_client,
    http_deliver,
    new_dispatcher,
    run_event_loop,
    template_source_for,
)
from app.services.templates import SyncRefused, sync_catalog, wabas_to_sync
from app.services.trace import correlation_trace, table
from app.settings import Settings, SettingsError, load_settings
from domain.model import ALL_SCOPES

_log = structlog.get_logger("wa_router")

# --- serve / worker / migrate ------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.host
    port = args.port or settings.port
    settings = msgspec.structs.replace(settings, host=host, port=port)
    app = create_app(settings)
    app.on_startup.append(freeze_heap)  # after the lifespan has built everything
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=20
    )
    return 0


@contextlib.contextmanager
def _metrics_server(host: str, port: int | None) -> Iterator[Metrics | None]:
    """The worker's metrics, served as ``GET /metrics`` on ``host:port`` by prometheus-client's
    own HTTP server on a thread of its own: the counters the dispatcher keeps (Cloud API calls,
    the time from 202 to accepted) exist in the worker alone. No port: no metrics (None)."""
    if port is None:
        yield None
        return
    metrics = Metrics()
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    _log.info("worker_metrics", url=f"http://{host}:{port}/metrics")
    try:
        yield metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def _worker(settings: Settings, metrics_port: int | None = None) -> None:
    tuning = Tuning()
    # A taken port stops the worker before anything else.
    with _metrics_server(settings.host, metrics_port) as metrics:
        async with migrated_db(settings) as db, graph_client(settings, tuning) as http:
            # In sandbox mode the simulator posts its webhooks to the serving process over HTTP.
            host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
            deliver = http_deliver(http, f"http://{host}:{settings.port}/v1/whatsapp/webhook")
            cloud_api = cloud_api_for(settings, db, http, deliver=deliver, tuning=tuning)
            dispatcher = new_dispatcher(settings, db, cloud_api, tuning, metrics=metrics)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, dispatcher.stop)
            try:
                freeze_heap()  # started: see app/runtime.py
                await dispatcher.run()
            finally:
                if isinstance(cloud_api, SandboxCloudApi):
                    await cloud_api.aclose()


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    run_event_loop(_worker(settings, args.metrics_port))
    return 0


async def _migrate(settings: Settings) -> None:
    async with migrated_db(settings):
        print("database schema is at the newest revision")


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    asyncio.run(_migrate(settings))
    return 0


# --- templates ---------------------------------------------------------------------------------


async def _templates_sync(
    settings: Settings, args: argparse.Namespace, tuning: Tuning | None = None
) -> int:
    """Pull each WABA's catalog; one line per WABA. 1 when a listing failed (the others are
    stored all the same), 2 for a sender that cannot be synced."""
    sender = None if args.sender is None else digits(args.sender, "--sender")
    tuning = tuning or Tuning()
    failed = 0
    async with migrated_db(settings) as db:
        async with db.read() as conn:
            senders = await key_repo.list_senders(conn)
        try:
            wabas = wabas_to_sync(senders, sender)
        except SyncRefused as exc:
            raise CliError(str(exc)) from None
        if not wabas:
            print(
                "no sender has a WABA id; set one with: wa-router senders add "
                "--phone-number-id ID --waba-id ID"
            )
            return 0
        async with graph_client(settings, tuning) as http:
            source = template_source_for(settings, db, http, tuning=tuning)
            for waba_id in wabas:
                try:
                    result = await sync_catalog(db, source, waba_id, now=tuning.clock())
                except CloudApiError as exc:
                    failed += 1
                    print(f"WABA {waba_id}: not synced: {exc}", file=sys.stderr)
                    continue
                print(f"WABA {waba_id}: {result.templates} templates, {result.approved} approved")
    return 1 if failed else 0


def cmd_templates_sync(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_templates_sync(settings, args))


# --- trace -------------------------------------------------------------------------------------


async def _trace(settings: Settings, args: argparse.Namespace) -> None:
    # A support read: it never migrates (the binary may be older or newer than the database).
    db = Database(settings.database_url)
    try:
        trace = await correlation_trace(db, args.correlation_id)
    finally:
        await db.dispose()
    if trace is None:
        raise CliError(f"nothing is recorded under correlation id {args.correlation_id[:128]!r}")
    if args.json:  # the very JSON of GET /v1/support/correlations/{id}
        print(msgspec.json.encode(trace_resource(trace)).decode())
        return
    print("\n".join(table(trace)))


# --- openapi ---------------------------------------------------------------------------------


def openapi_json() -> str:
    app = create_app(Settings(), configure_logs=False)
    return json.dumps(app.openapi_schema.to_schema(), indent=2, sort_keys=True) + "\n"


def cmd_openapi(_settings: Settings, args: argparse.Namespace) -> int:
    text = openapi_json()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _async(fn: object) -> object:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        asyncio.run(fn(settings, args))  # type: ignore[operator]
        return 0

    return run


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, not {text!r}")
    return port


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wa-router", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate if needed, then serve HTTP (and the dispatcher)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=cmd_serve)
    worker = sub.add_parser("worker", help="run the dispatcher alone")
    worker.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve GET /metrics (Prometheus text) on WA_ROUTER_HOST:PORT",
    )
    worker.set_defaults(run=cmd_worker)
    sub.add_parser("migrate", help="apply schema migrations").set_defaults(run=cmd_migrate)

    senders = sub.add_parser("senders", help="WhatsApp business numbers").add_subparsers(
        dest="action", required=True
    )
    add = senders.add_parser("add", help="register or update a sender")
    add.add_argument("--phone-number-id", required=True)
    add.add_argument("--waba-id")
    add.add_argument("--display-number")
    add.add_argument("--name")
    add.add_argument("--max-mps", type=int)
    add.set_defaults(run=_async(senders_add))
    ls = senders.add_parser("list", help="list senders")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=_async(senders_list))
    resume = senders.add_parser("resume", help="lift a pause set by a sender-wide error")
    resume.add_argument("phone_number_id")
    resume.set_defaults(run=_async(senders_resume))

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key; the secret is printed once")
    create.add_argument("--client", required=True)
    create.add_argument(
        "--scopes", required=True, help="comma-separated: " + ",".join(sorted(ALL_SCOPES))
    )
    create.add_argument("--senders", help="comma-separated phone_number_ids (default: all)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=_async(keys_create))
    kl = keys.add_parser("list", help="list keys (never their secrets)")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(run=_async(keys_list))
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_async(keys_revoke))

    templates = sub.add_parser("templates", help="the template catalog").add_subparsers(
        dest="action", required=True
    )
    sync = templates.add_parser("sync", help="pull the template catalog from the Cloud API")
    sync.add_argument("--sender", help="only this sender's WABA (phone_number_id)")
    sync.set_defaults(run=cmd_templates_sync)

    trace = sub.add_parser("trace", help="the support timeline of a correlation id")
    trace.add_argument("correlation_id", metavar="CORRELATION_ID")
    trace.add_argument("--json", action="store_true", help="the JSON of the HTTP route")
    trace.set_defaults(run=_async(_trace))

    openapi = sub.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output")
    openapi.set_defaults(run=cmd_openapi)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"wa-router: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("serve", "worker"):
        configure_logging(settings.resolved_log_format)
    try:
        return int(args.run(settings, args))
    except CliError as exc:
        print(f"wa-router: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"wa-router: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(
            f"wa-router: the database failed: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
