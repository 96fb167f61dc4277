"""Sandbox start-up: the sandbox sender and a stable all-scope key, printed loudly; and, with a
real token, the retirement of that key (it must never reach a real sender)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select

from adapters.cloud_api.sandbox import SANDBOX_DISPLAY_NUMBER, SANDBOX_SENDER_ID, SANDBOX_WABA_ID
from adapters.db import keys as key_repo
from adapters.db.tables import sandbox_state as _state
from app.services.keys import create_key
from domain.model import ALL_SCOPES, Sender

if TYPE_CHECKING:
    from app.container import Services

SANDBOX_CLIENT = "sandbox"
_log = structlog.get_logger("wa_router.sandbox")


async def ensure_sandbox(services: Services) -> str:
    """Register the sandbox sender and return the sandbox key (created once, then kept in the
    sandbox database so it stays the same across restarts)."""
    now = services.clock()
    async with services.db.write() as conn:
        await key_repo.upsert_sender(
            conn,
            Sender(
                phone_number_id=SANDBOX_SENDER_ID,
                waba_id=SANDBOX_WABA_ID,
                display_number=SANDBOX_DISPLAY_NUMBER,
                name="Sandbox sender",
            ),
            now=now,
        )
        secret = await conn.scalar(select(_state.c.value).where(_state.c.name == "api_key"))
    if secret is None or await services.keys.authenticate(secret) is None:
        created = await create_key(
            services.db,
            client=SANDBOX_CLIENT,
            scopes=sorted(ALL_SCOPES),
            senders=[SANDBOX_SENDER_ID],
            now=now,
        )
        secret = created.secret
        async with services.db.write() as conn:
            await conn.execute(_state.delete().where(_state.c.name == "api_key"))
            await conn.execute(_state.insert().values(name="api_key", value=secret))
    settings = services.settings
    banner = (
        "\n" + "=" * 72 + "\n"
        "  wa-router is running in SANDBOX MODE (no WA_ROUTER_ACCESS_TOKEN).\n"
        "  Nothing reaches WhatsApp: a simulator plays the Cloud API.\n"
        f"  Sandbox sender: {SANDBOX_SENDER_ID}\n"
        f"  Sandbox API key (all scopes, sandbox sender only): {secret}\n"
        f"  Try: curl -s http://{settings.host}:{settings.port}/healthz\n" + "=" * 72 + "\n"
    )
    sys.stderr.write(banner)
    sys.stderr.flush()
    return str(secret)


async def retire_sandbox(services: Services) -> int:
    """With a real token: revoke the sandbox client's keys and forget the printed secret."""
    now = services.clock()
    revoked = 0
    async with services.db.write() as conn:
        for key in await key_repo.list_keys(conn):
            if key.client_name == SANDBOX_CLIENT and key.revoked_at is None:
                revoked += await key_repo.revoke_key(conn, key.id, now=now)
        await conn.execute(_state.delete().where(_state.c.name == "api_key"))
    if revoked:
        _log.warning("sandbox_keys_revoked", count=revoked, reason="a real access token is set")
    return revoked
