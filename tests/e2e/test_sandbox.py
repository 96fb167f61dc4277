"""Sandbox mode: no token, a simulator plays the Cloud API and posts signed statuses back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.cloud_api.sandbox import SANDBOX_SENDER_ID
from adapters.db.tables import sandbox_state
from app.main import create_app
from app.runtime import Tuning
from tests.asgi import client_for
from tests.e2e.conftest import router_settings
from tests.e2e.test_bad_input import assert_problem


async def _sandbox_key(app: object) -> str:
    services = app.state["services"]  # type: ignore[attr-defined]
    async with services.db.read() as conn:
        secret = await conn.scalar(
            select(sandbox_state.c.value).where(sandbox_state.c.name == "api_key")
        )
    return str(secret)


@pytest.fixture
def sandbox_app(tmp_path: Path) -> object:
    settings = router_settings(tmp_path, access_token=None, app_secret=None)
    return create_app(
        settings,
        tuning=Tuning(idle_poll=0.02, sandbox_delays=(0.01, 0.02, 0.03)),
        configure_logs=False,
    )


async def test_a_newcomer_gets_from_inbound_to_read(
    sandbox_app: object, capsys: pytest.CaptureFixture[str]
) -> None:
    async with client_for(sandbox_app) as client:
        key = await _sandbox_key(sandbox_app)
        headers = {"Authorization": f"Bearer {key}"}
        banner = capsys.readouterr().err
        assert key in banner
        assert "SANDBOX MODE" in banner

        refused = await client.post(
            "/v1/whatsapp/messages", headers=headers, json={"to": "+14155552671", "text": "hello"}
        )
        assert_problem(refused, 422, "outside_service_window")

        inbound = await client.post(
            "/v1/sandbox/inbound", headers=headers, json={"from": "+14155552671", "text": "hi"}
        )
        assert inbound.status_code == 200, inbound.text
        assert inbound.json()["sender_id"] == SANDBOX_SENDER_ID

        sent = await client.post(
            "/v1/whatsapp/messages", headers=headers, json={"to": "+14155552671", "text": "hello"}
        )
        assert sent.status_code == 202, sent.text
        message_id = sent.json()["id"]
        for _ in range(300):
            body = (await client.get(f"/v1/whatsapp/messages/{message_id}", headers=headers)).json()
            if body["status"] == "read":
                break
            await asyncio.sleep(0.02)
        assert body["status"] == "read"
        assert [h["status"] for h in body["history"]] == [
            "queued",
            "accepted",
            "sent",
            "delivered",
            "read",
        ]
        assert body["wamid"].startswith("wamid.")


async def test_the_sandbox_key_survives_a_restart(sandbox_app: object, tmp_path: Path) -> None:
    async with client_for(sandbox_app):
        first = await _sandbox_key(sandbox_app)
    again = create_app(
        router_settings(tmp_path, access_token=None, app_secret=None), configure_logs=False
    )
    async with client_for(again) as client:
        assert await _sandbox_key(again) == first
        response = await client.get("/v1/whatsapp/messages/msg_x", headers={"X-API-Key": first})
        assert response.status_code == 404


async def test_sandbox_route_is_absent_with_a_real_token(tmp_path: Path) -> None:
    app = create_app(router_settings(tmp_path), configure_logs=False)
    async with client_for(app) as client:
        response = await client.post("/v1/sandbox/inbound", json={"from": "+14155552671"})
        assert_problem(response, 404, "not_found")


async def test_the_sandbox_key_is_revoked_once_a_real_token_is_set(
    sandbox_app: object, tmp_path: Path
) -> None:
    async with client_for(sandbox_app):
        secret = await _sandbox_key(sandbox_app)
    real = create_app(router_settings(tmp_path), configure_logs=False)
    async with client_for(real) as client:
        response = await client.get("/v1/whatsapp/messages/msg_x", headers={"X-API-Key": secret})
        assert_problem(response, 401, "invalid_api_key")
