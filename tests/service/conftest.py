from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from adapters.cloud_api.client import CloudApiClient, GraphHttp
from adapters.db import keys as key_repo
from adapters.db.engine import Database
from app.http.messages import render
from app.services.directory import SenderDirectory
from app.services.dispatch import Dispatcher
from app.services.keys import create_key
from app.services.sending import SendingService, SendRequest
from domain import content
from domain.model import ALL_SCOPES, ApiKey, Message, Sender
from domain.retry import RetryPolicy
from tests.fakes import FakeClock, FakeGraph

SENDER = "106540352242922"
CUSTOMER = "14155552671"


@dataclass
class World:
    """The use cases over a real SQLite file, a fake Graph API and a clock we move by hand."""

    db: Database
    graph: FakeGraph
    clock: FakeClock
    sending: SendingService
    dispatcher: Dispatcher
    key: ApiKey
    cloud: CloudApiClient

    async def open_window(self, wa_id: str = CUSTOMER) -> None:
        from adapters.db import contacts as contact_repo

        async with self.db.write() as conn:
            await contact_repo.move_last_inbound(conn, SENDER, wa_id, self.clock.now)

    async def send_to(self, sender_id: str, wa_id: str, text: str = "hello") -> Message:
        """A template (no window needed) from any registered sender."""
        accepted = await self.sending.accept(
            SendRequest(
                key=self.key,
                route="test",
                sender_id=sender_id,
                wa_id=wa_id,
                content=content.template(name="hello_world", language="en_US", components=[]),
                reply_to=None,
                metadata={},
                correlation_id="req_test",
            )
        )
        return await self.message(accepted.message_id)

    async def send_text(self, text: str = "hello", wa_id: str = CUSTOMER) -> Message:
        accepted = await self.sending.accept(
            SendRequest(
                key=self.key,
                route="test",
                sender_id=SENDER,
                wa_id=wa_id,
                content=content.free_form(text=text),
                reply_to=None,
                metadata={},
                correlation_id="req_test",
            )
        )
        return await self.message(accepted.message_id)

    async def message(self, message_id: str) -> Message:
        return await self.sending.get(message_id, key=self.key)


POLICY = RetryPolicy(
    base=timedelta(seconds=2),
    cap=timedelta(seconds=60),
    max_attempts=4,
    max_age=timedelta(hours=1),
    reconcile_after=timedelta(seconds=30),
)


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    graph = FakeGraph()
    clock = FakeClock()
    async with db.write() as conn:
        await key_repo.upsert_sender(conn, Sender(phone_number_id=SENDER), now=clock.now)
    created = await create_key(
        db, client="crm", scopes=sorted(ALL_SCOPES), senders=None, now=clock.now
    )
    async with GraphHttp(transport=graph.transport(), base_url="https://graph.test") as h:
        cloud = CloudApiClient(h, token="tok", version="v25.0")
        yield World(
            db=db,
            graph=graph,
            clock=clock,
            sending=SendingService(db, senders=SenderDirectory(db), clock=clock, render=render),
            dispatcher=Dispatcher(
                db, cloud, clock=clock, policy=POLICY, rand=lambda: 1.0, owner="test-dispatcher"
            ),
            key=created.key,
            cloud=cloud,
        )
