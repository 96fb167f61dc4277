from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import func, select

from adapters.cloud_api.sandbox import inbound_text_webhook, new_wamid, status_webhook
from adapters.cloud_api.webhooks import sign
from adapters.db import keys as key_repo
from adapters.db.tables import messages
from app.container import Services
from app.main import create_app
from app.runtime import Tuning
from app.services.keys import create_key
from app.settings import Settings
from domain.model import ALL_SCOPES, Scope, Sender
from domain.retry import RetryPolicy
from tests.asgi import client_for
from tests.conftest import SUITE_BACKEND, fresh_postgres_database
from tests.fakes import FakeGraph

APP_SECRET = "test-app-secret"
SENDER = "106540352242922"
OTHER_SENDER = "106540352242923"
CUSTOMER = "14155552671"


@dataclass
class Router:
    """The app through Litestar's AsyncTestClient, with a fake Graph API behind it."""

    client: httpx.AsyncClient
    graph: FakeGraph
    services: Services

    async def key(
        self,
        client: str = "crm",
        scopes: Sequence[Scope] = tuple(ALL_SCOPES),
        senders: Sequence[str] | None = None,
    ) -> dict[str, str]:
        created = await create_key(
            self.services.db,
            client=client,
            scopes=list(scopes),
            senders=senders,
            now=datetime.now(UTC),
        )
        return {"Authorization": f"Bearer {created.secret}"}

    async def sender(self, phone_number_id: str = SENDER) -> None:
        async with self.services.db.write() as conn:
            await key_repo.upsert_sender(
                conn, Sender(phone_number_id=phone_number_id), now=datetime.now(UTC)
            )
        self.services.senders.forget()

    async def webhook(self, body: bytes, *, secret: str = APP_SECRET) -> httpx.Response:
        return await self.client.post(
            "/v1/whatsapp/webhook",
            content=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)},
        )

    async def customer_writes(
        self, wa_id: str = CUSTOMER, *, at: datetime | None = None, sender: str = SENDER
    ) -> str:
        wamid = new_wamid()
        body = inbound_text_webhook(
            phone_number_id=sender,
            wa_id=wa_id,
            wamid=wamid,
            text="hi",
            at=at or datetime.now(UTC),
        )
        response = await self.webhook(body)
        assert response.status_code == 200, response.text
        return wamid

    async def status(
        self,
        wamid: str,
        status: str,
        *,
        wa_id: str = CUSTOMER,
        sender: str = SENDER,
        errors: list[dict[str, Any]] | None = None,
        callback: str | None = None,
    ) -> httpx.Response:
        body = status_webhook(
            phone_number_id=sender,
            wamid=wamid,
            status=status,
            wa_id=wa_id,
            at=datetime.now(UTC),
            callback_data=callback,
            errors=errors,
        )
        return await self.webhook(body)

    async def send(self, headers: dict[str, str], **body: Any) -> httpx.Response:
        body.setdefault("to", "+" + CUSTOMER)
        return await self.client.post("/v1/whatsapp/messages", json=body, headers=headers)

    async def wait_for(
        self, message_id: str, headers: dict[str, str], *statuses: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        import asyncio

        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.client.get(f"/v1/whatsapp/messages/{message_id}", headers=headers)
            body: dict[str, Any] = response.json()
            if body["status"] in statuses:
                # The dispatcher's task logs and counts a send a loop turn after its record
                # is committed; in-process nothing else yields (no socket), so let it run.
                for _ in range(5):
                    await asyncio.sleep(0)
                return body
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"still {body['status']}, wanted {statuses}: {body}")
            await asyncio.sleep(0.02)

    async def stored_messages(self) -> int:
        async with self.services.db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(messages)) or 0)


def router_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'router.db'}",
        "access_token": "test-token",
        "app_secret": APP_SECRET,
        "verify_token": "verify-me",
        "graph_api_url": "https://graph.example",
    }
    values.update(overrides)
    return msgspec.convert(values, Settings)


FAST_RETRIES = RetryPolicy(
    base=timedelta(milliseconds=5),
    cap=timedelta(milliseconds=20),
    max_attempts=5,
    reconcile_after=timedelta(milliseconds=50),
)


@asynccontextmanager
async def running_router(
    tmp_path: Path,
    *,
    clock: Callable[[], datetime] | None = None,
    **settings: Any,
) -> AsyncIterator[Router]:
    """The app on its own database (of the suite's backend) with a fake Graph API;
    ``settings`` override defaults."""
    if SUITE_BACKEND == "postgres" and "database_url" not in settings:
        async with (
            fresh_postgres_database() as url,
            running_router(tmp_path, clock=clock, database_url=url, **settings) as running,
        ):
            yield running
        return
    graph = FakeGraph()
    tuning = Tuning(
        graph_transport=graph.transport(),
        retry_policy=FAST_RETRIES,
        idle_poll=0.02,
        key_cache_ttl=0.2,
        **({"clock": clock} if clock is not None else {}),
    )
    app = create_app(router_settings(tmp_path, **settings), tuning=tuning, configure_logs=False)
    async with client_for(app) as client:
        yield Router(client=client, graph=graph, services=app.state["services"])


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    async with running_router(tmp_path) as running:
        yield running


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_router(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Router]:
    """The same app on SQLite and, when configured, on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        async with running_router(tmp_path) as running:
            yield running
        return
    async with (
        fresh_postgres_database() as url,
        running_router(tmp_path, database_url=url) as running,
    ):
        yield running
