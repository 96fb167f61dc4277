"""Secrets: stored only as digests, compared in constant time, never logged."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from sqlalchemy import text
from structlog.testing import capture_logs

from adapters.cloud_api.sandbox import inbound_text_webhook
from adapters.cloud_api.webhooks import sign
from tests.e2e.conftest import APP_SECRET, SENDER, Router


async def test_api_keys_are_stored_only_as_sha256(router: Router) -> None:
    headers = await router.key()
    secret = headers["Authorization"].removeprefix("Bearer ")

    async with router.services.db.read() as conn:
        digests = (await conn.execute(text("SELECT secret_sha256 FROM api_keys"))).scalars().all()
        rows = []
        for table in ("api_keys", "clients", "message_events", "messages"):
            rows += (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
    dump = "\n".join(repr(row) for row in rows)

    assert digests == [hashlib.sha256(secret.encode()).hexdigest()]
    assert secret not in dump


async def test_secret_comparisons_use_a_constant_time_compare(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    body = inbound_text_webhook(
        phone_number_id=SENDER,
        wa_id="14155552671",
        wamid="wamid.S",
        text="hi",
        at=datetime.now(UTC),
    )

    signed = await router.webhook(body)
    handshake = await router.client.get(
        "/v1/whatsapp/webhook",
        params={"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "1"},
    )

    assert signed.status_code == handshake.status_code == 200
    assert (sign(body, APP_SECRET).encode(), sign(body, APP_SECRET).encode()) in compared
    assert (b"verify-me", b"verify-me") in compared


async def test_no_secret_reaches_the_logs(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    secret = headers["Authorization"].removeprefix("Bearer ")

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await router.customer_writes()
        await router.send(headers, text="hello")
        await router.send({"Authorization": "Bearer wrk_wrong-guess"}, text="hello")
        await router.client.get("/v1/whatsapp/messages/msg_x", headers={"X-API-Key": secret})

    flat = repr(logs)
    for leaked in (secret, "wrk_wrong-guess", APP_SECRET, "test-token", "verify-me"):
        assert leaked not in flat
