"""Logs carry the correlation id and never a secret; an internal failure is a bare 500, an
unreachable database a 503."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text
from structlog.testing import capture_logs

from adapters.db import engine as engine_module
from tests.e2e.conftest import Router, running_router
from tests.e2e.test_bad_input import assert_problem


async def test_every_log_line_of_a_request_and_its_dispatch_carries_the_correlation_id(
    router: Router,
) -> None:
    await router.sender()
    headers = await router.key()
    secret = headers["Authorization"].removeprefix("Bearer ")
    await router.customer_writes()
    body_text = "Your one-time code is 918273 do not share"

    def own_lines() -> list[dict[str, object]]:
        return [entry for entry in logs if entry.get("correlation_id") == "support-case-42"]

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await router.send(
            {**headers, "X-Correlation-Id": "support-case-42"}, text=body_text
        )
        await router.wait_for(response.json()["id"], headers, "accepted")
        # The send logs its line once it hears that its record is committed, which a poll can
        # see a moment before (the COMMIT's wait for the disk runs on a thread).
        for _ in range(500):
            if any(entry["event"] == "dispatch" for entry in own_lines()):
                break
            await asyncio.sleep(0.01)

    mine = own_lines()
    events = {entry["event"] for entry in mine}
    assert {"request", "dispatch"} <= events
    dispatch = next(entry for entry in mine if entry["event"] == "dispatch")
    assert dispatch["message_id"] == response.json()["id"]
    assert dispatch["outcome"] == "accepted"
    flat = repr(logs)
    assert secret not in flat
    assert "918273" not in flat
    assert "test-token" not in flat


async def test_an_internal_failure_is_a_problem_without_a_trace(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    async with router.services.db.write() as conn:
        await conn.execute(text("DROP TABLE message_events"))

    response = await router.send(headers, text="hello")

    problem = assert_problem(response, 500, "internal_error")
    assert "message_events" not in response.text
    assert "Traceback" not in problem["detail"]


async def test_a_webhook_that_cannot_be_stored_is_not_acknowledged(router: Router) -> None:
    async with router.services.db.write() as conn:
        await conn.execute(text("DROP TABLE inbound_messages"))

    from datetime import UTC, datetime

    from adapters.cloud_api.sandbox import inbound_text_webhook

    body = inbound_text_webhook(
        phone_number_id="1", wa_id="14155552671", wamid="wamid.X", text="hi", at=datetime.now(UTC)
    )
    response = await router.webhook(body)

    assert response.status_code == 500  # Meta retries what we did not store


async def test_an_unreachable_database_is_a_503_that_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's write lock held elsewhere past the busy timeout (another process stuck, say):
    the send is refused as not_ready, nothing is stored, and the same request works once the
    lock is free."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "router.db"
    async with running_router(tmp_path, database_url=f"sqlite+aiosqlite:///{path}") as router:
        await router.sender()
        headers = await router.key()
        await router.customer_writes()
        before = await router.stored_messages()
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            refused = await router.send({**headers, "X-Correlation-Id": "db-down-1"}, text="hi")
            webhook = await router.status("wamid.unknown", "delivered")
        finally:
            holder.close()
        problem = assert_problem(refused, 503, "not_ready")
        assert refused.headers["Retry-After"] == "1"
        assert problem["correlation_id"] == "db-down-1"
        assert "locked" not in refused.text  # the database's own words stay in the log
        assert webhook.status_code == 503  # not acknowledged: Meta delivers it again
        assert await router.stored_messages() == before
        assert (await router.send(headers, text="hi")).status_code == 202
