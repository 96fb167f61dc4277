"""The operator's commands of ``wa-router``: senders and API keys (API.md "Command line"),
and the helpers every command shares. app/cli.py parses the command line and runs them."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from adapters.db import keys as key_repo
from adapters.db.engine import Database
from adapters.db.migrate import upgrade_to_head
from app.services.keys import create_key
from app.settings import Settings
from domain.model import ALL_SCOPES, Scope, Sender
from domain.phones import InvalidPhoneNumber, normalise_phone


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class CliError(Exception):
    """A wrong argument: printed as one line, exit status 2."""


def digits(value: str, name: str) -> str:
    if not value.isdigit() or not 1 <= len(value) <= 32:
        raise CliError(f"{name} must be digits (the Cloud API id), not {value!r}")
    return value


def parse_scopes(value: str) -> list[Scope]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise CliError("--scopes needs at least one of " + ", ".join(sorted(ALL_SCOPES)))
    try:
        return sorted({Scope(name) for name in names})
    except ValueError:
        raise CliError(
            f"unknown scope in {value!r}; scopes are " + ", ".join(sorted(ALL_SCOPES))
        ) from None


@asynccontextmanager
async def migrated_db(settings: Settings) -> AsyncIterator[Database]:
    """The configured database, migrated to the newest schema, disposed on leaving."""
    db = Database(settings.database_url)
    try:
        await upgrade_to_head(db)
        yield db
    finally:
        await db.dispose()


# --- senders ---------------------------------------------------------------------------------


async def senders_add(settings: Settings, args: argparse.Namespace) -> None:
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
        phone_number_id=digits(args.phone_number_id, "--phone-number-id"),
        waba_id=None if args.waba_id is None else digits(args.waba_id, "--waba-id"),
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
    async with migrated_db(settings) as db, db.write() as conn:
        created = await key_repo.upsert_sender(conn, sender, now=utc_now(), only=given)
    print(("added" if created else "updated") + f" sender {sender.phone_number_id}")


def sender_json(sender: Sender) -> dict[str, object]:
    return {
        "phone_number_id": sender.phone_number_id,
        "waba_id": sender.waba_id,
        "display_number": sender.display_number,
        "name": sender.name,
        "max_mps": sender.max_mps,
        "paused_until": iso(sender.paused_until),
        "pause_reason": sender.pause_reason,
    }


async def senders_resume(settings: Settings, args: argparse.Namespace) -> None:
    sender_id = digits(args.phone_number_id, "PHONE_NUMBER_ID")
    async with migrated_db(settings) as db, db.write() as conn:
        found = await key_repo.resume_sender(conn, sender_id)
    if not found:
        raise CliError(f"no sender {sender_id}")
    print(f"resumed sender {sender_id}: its queued messages go out again")


async def senders_list(settings: Settings, args: argparse.Namespace) -> None:
    async with migrated_db(settings) as db, db.read() as conn:
        senders = await key_repo.list_senders(conn)
    if args.json:
        print(json.dumps([sender_json(s) for s in senders], indent=2))
        return
    if not senders:
        print("no senders; add one with: wa-router senders add --phone-number-id ID")
        return
    now = utc_now()
    print(f"{'PHONE_NUMBER_ID':<18} {'DISPLAY':<16} {'MAX_MPS':>7}  {'STATE':<8} NAME")
    for s in senders:
        paused = s.paused_until is not None and s.paused_until > now
        state = "paused" if paused else "active"
        line = (
            f"{s.phone_number_id:<18} {s.display_number or '-':<16} {s.max_mps:>7}  "
            f"{state:<8} {s.name or ''}"
        )
        if paused and s.paused_until is not None:
            until = "resumed" if s.paused_until.year == 9999 else iso(s.paused_until)
            line += f"  (until {until}: {s.pause_reason})"
        print(line)


# --- keys ------------------------------------------------------------------------------------


async def keys_create(settings: Settings, args: argparse.Namespace) -> None:
    client = args.client.strip()
    if not client or len(client) > 200:
        raise CliError("--client must be 1-200 characters")
    scopes = parse_scopes(args.scopes)
    senders = None
    if args.senders is not None:
        senders = [digits(s.strip(), "--senders") for s in args.senders.split(",") if s.strip()]
        if not senders:
            raise CliError("--senders needs at least one phone_number_id")
    async with migrated_db(settings) as db:
        created = await create_key(db, client=client, scopes=scopes, senders=senders, now=utc_now())
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


async def keys_list(settings: Settings, args: argparse.Namespace) -> None:
    async with migrated_db(settings) as db, db.read() as conn:
        keys = await key_repo.list_keys(conn)
    rows: list[dict[str, Any]] = [
        {
            "id": k.id,
            "client": k.client_name,
            "scopes": sorted(str(s) for s in k.scopes),
            "senders": None if k.senders is None else sorted(k.senders),
            "created_at": iso(k.created_at),
            "last_used_at": iso(k.last_used_at),
            "revoked_at": iso(k.revoked_at),
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


async def keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    async with migrated_db(settings) as db, db.write() as conn:
        found = await key_repo.revoke_key(conn, args.key_id, now=utc_now())
    if not found:
        raise CliError(f"no key {args.key_id!r}")
    print(f"revoked {args.key_id} (running servers stop accepting it within seconds)")
