"""``wa-router``: serve, worker, migrate, senders, keys, templates, trace, openapi (API.md
"Command line")."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from adapters.cloud_api.errors import CloudApiError
from adapters.cloud_api.sandbox import SandboxCloudApi
from adapters.db import keys as key_repo
from adapters.db.engine import Database
from adapters.db.migrate import upgrade_to_head
from app.http.support import trace_resource
from app.logs import configure_logging
from app.main import create_app
from app.runtime import (
    Tuning,
    cloud_api_for,
    graph_client,
    http_deliver,
    new_dispatcher,
    template_source_for,
)
from app.services.keys import create_key
from app.services.templates import SyncRefused, sync_catalog, wabas_to_sync
from app.services.trace import correlation_trace, table
from app.settings import Settings, SettingsError, load_settings
from domain.model import ALL_SCOPES, Scope, Sender
from domain.phones import InvalidPhoneNumber, normalise_phone


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class CliError(Exception):
    """A wrong argument: printed as one line, exit status 2."""


def _digits(value: str, name: str) -> str:
    if not value.isdigit() or not 1 <= len(value) <= 32:
        raise CliError(f"{name} must be digits (the Cloud API id), not {value!r}")
    return value


def _scopes(value: str) -> list[Scope]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise CliError("--scopes needs at least one of " + ", ".join(sorted(ALL_SCOPES)))
    try:
        return sorted({Scope(name) for name in names})
    except ValueError:
        raise CliError(
            f"unknown scope in {value!r}; scopes are " + ", ".join(sorted(ALL_SCOPES))
        ) from None


async def _with_db(settings: Settings) -> Database:
    db = Database(settings.database_url)
    await upgrade_to_head(db)
    return db


# --- serve / worker / migrate ------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.host
    port = args.port or settings.port
    settings = msgspec.structs.replace(settings, host=host, port=port)
    app = create_app(settings)
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=20
    )
    return 0


async def _worker(settings: Settings) -> None:
    db = await _with_db(settings)
    tuning = Tuning()
    async with graph_client(settings, tuning) as http:
        # In sandbox mode the simulator posts its webhooks to the serving process over HTTP.
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
        deliver = http_deliver(http, f"http://{host}:{settings.port}/v1/whatsapp/webhook")
        cloud_api = cloud_api_for(settings, db, http, deliver=deliver, tuning=tuning)
        dispatcher = new_dispatcher(settings, db, cloud_api, tuning)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, dispatcher.stop)
        try:
            await dispatcher.run()
        finally:
            if isinstance(cloud_api, SandboxCloudApi):
                await cloud_api.aclose()
            await db.dispose()


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    asyncio.run(_worker(settings))
    return 0


async def _migrate(settings: Settings) -> None:
    db = await _with_db(settings)
    await db.dispose()


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    asyncio.run(_migrate(settings))
    print("database schema is at the newest revision")
    return 0


# --- senders ---------------------------------------------------------------------------------


async def _senders_add(settings: Settings, args: argparse.Namespace) -> None:
    if args.max_mps is not None and not 1 <= args.max_mps <= 1000:
        raise CliError("--max-mps must be between 1 and 1000")
    if args.display_number is not None:
        try:
            display = "+" + normalise_phone(args.display_number)
        except InvalidPhoneNumber as exc:
            raise CliError(f"--display-number: {exc}") from None
    else:
        display = None
    sender = Sender(
        phone_number_id=_digits(args.phone_number_id, "--phone-number-id"),
        waba_id=None if args.waba_id is None else _digits(args.waba_id, "--waba-id"),
        display_number=display,
        name=args.name,
        max_mps=args.max_mps or 80,
    )
    given = {
        name
        for name, flag in (
            ("waba_id", args.waba_id),
            ("display_number", args.display_number),
            ("name", args.name),
            ("max_mps", args.max_mps),
        )
        if flag is not None
    }
    db = await _with_db(settings)
    try:
        async with db.write() as conn:
            created = await key_repo.upsert_sender(conn, sender, now=_now(), only=given)
    finally:
        await db.dispose()
    print(("added" if created else "updated") + f" sender {sender.phone_number_id}")


def _sender_json(sender: Sender) -> dict[str, object]:
    return {
        "phone_number_id": sender.phone_number_id,
        "waba_id": sender.waba_id,
        "display_number": sender.display_number,
        "name": sender.name,
        "max_mps": sender.max_mps,
        "paused_until": _iso(sender.paused_until),
        "pause_reason": sender.pause_reason,
    }


async def _senders_resume(settings: Settings, args: argparse.Namespace) -> None:
    sender_id = _digits(args.phone_number_id, "PHONE_NUMBER_ID")
    db = await _with_db(settings)
    try:
        async with db.write() as conn:
            found = await key_repo.resume_sender(conn, sender_id)
    finally:
        await db.dispose()
    if not found:
        raise CliError(f"no sender {sender_id}")
    print(f"resumed sender {sender_id}: its queued messages go out again")


async def _senders_list(settings: Settings, args: argparse.Namespace) -> None:
    db = await _with_db(settings)
    try:
        async with db.read() as conn:
            senders = await key_repo.list_senders(conn)
    finally:
        await db.dispose()
    if args.json:
        print(json.dumps([_sender_json(s) for s in senders], indent=2))
        return
    if not senders:
        print("no senders; add one with: wa-router senders add --phone-number-id ID")
        return
    now = _now()
    print(f"{'PHONE_NUMBER_ID':<18} {'DISPLAY':<16} {'MAX_MPS':>7}  {'STATE':<8} NAME")
    for s in senders:
        paused = s.paused_until is not None and s.paused_until > now
        state = "paused" if paused else "active"
        line = (
            f"{s.phone_number_id:<18} {s.display_number or '-':<16} {s.max_mps:>7}  "
            f"{state:<8} {s.name or ''}"
        )
        if paused and s.paused_until is not None:
            until = "resumed" if s.paused_until.year == 9999 else _iso(s.paused_until)
            line += f"  (until {until}: {s.pause_reason})"
        print(line)


# --- keys ------------------------------------------------------------------------------------


async def _keys_create(settings: Settings, args: argparse.Namespace) -> None:
    client = args.client.strip()
    if not client or len(client) > 200:
        raise CliError("--client must be 1-200 characters")
    scopes = _scopes(args.scopes)
    senders = None
    if args.senders is not None:
        senders = [_digits(s.strip(), "--senders") for s in args.senders.split(",") if s.strip()]
        if not senders:
            raise CliError("--senders needs at least one phone_number_id")
    db = await _with_db(settings)
    try:
        created = await create_key(db, client=client, scopes=scopes, senders=senders, now=_now())
    finally:
        await db.dispose()
    if args.json:
        print(
            json.dumps(
                {
                    "id": created.key.id,
                    "key": created.secret,
                    "client": client,
                    "scopes": [str(s) for s in scopes],
                    "senders": senders or [],
                }
            )
        )
        return
    print(f"key id:  {created.key.id}")
    print(f"client:  {client}")
    print(f"scopes:  {','.join(scopes)}")
    print(f"senders: {','.join(senders) if senders else 'all'}")
    print(f"secret:  {created.secret}")
    print("The secret is shown once and stored only as a SHA-256 digest: keep it now.")


async def _keys_list(settings: Settings, args: argparse.Namespace) -> None:
    db = await _with_db(settings)
    try:
        async with db.read() as conn:
            keys = await key_repo.list_keys(conn)
    finally:
        await db.dispose()
    rows: list[dict[str, Any]] = [
        {
            "id": k.id,
            "client": k.client_name,
            "scopes": sorted(str(s) for s in k.scopes),
            "senders": None if k.senders is None else sorted(k.senders),
            "created_at": _iso(k.created_at),
            "last_used_at": _iso(k.last_used_at),
            "revoked_at": _iso(k.revoked_at),
        }
        for k in keys
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no keys; create one with: wa-router keys create --client NAME --scopes ...")
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        senders = ",".join(row["senders"]) if row["senders"] else "all senders"
        print(f"{row['id']}  {row['client']}  {','.join(row['scopes'])}  {senders}  {state}")


async def _keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    db = await _with_db(settings)
    try:
        async with db.write() as conn:
            found = await key_repo.revoke_key(conn, args.key_id, now=_now())
    finally:
        await db.dispose()
    if not found:
        raise CliError(f"no key {args.key_id!r}")
    print(f"revoked {args.key_id} (running servers stop accepting it within seconds)")


# --- templates ---------------------------------------------------------------------------------


async def _templates_sync(
    settings: Settings, args: argparse.Namespace, tuning: Tuning | None = None
) -> int:
    """Pull each WABA's catalog; one line per WABA. 1 when a listing failed (the others are
    stored all the same), 2 for a sender that cannot be synced."""
    sender = None if args.sender is None else _digits(args.sender, "--sender")
    tuning = tuning or Tuning()
    db = await _with_db(settings)
    failed = 0
    try:
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
    finally:
        await db.dispose()
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wa-router", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate if needed, then serve HTTP (and the dispatcher)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=cmd_serve)
    sub.add_parser("worker", help="run the dispatcher alone").set_defaults(run=cmd_worker)
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
    add.set_defaults(run=_async(_senders_add))
    ls = senders.add_parser("list", help="list senders")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=_async(_senders_list))
    resume = senders.add_parser("resume", help="lift a pause set by a sender-wide error")
    resume.add_argument("phone_number_id")
    resume.set_defaults(run=_async(_senders_resume))

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key; the secret is printed once")
    create.add_argument("--client", required=True)
    create.add_argument(
        "--scopes", required=True, help="comma-separated: " + ",".join(sorted(ALL_SCOPES))
    )
    create.add_argument("--senders", help="comma-separated phone_number_ids (default: all)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=_async(_keys_create))
    kl = keys.add_parser("list", help="list keys (never their secrets)")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(run=_async(_keys_list))
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_async(_keys_revoke))

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
