"""Logs carry the correlation id and never a secret; an internal failure is a bare 500."""

from __future__ import annotations

import structlog
from sqlalchemy import text
from structlog.testing import capture_logs

from tests.e2e.conftest import Router
from tests.e2e.test_bad_input import assert_problem


async def test_every_log_line_of_a_request_and_its_dispatch_carries_the_correlation_id(
    router: Router,
) -> None:
    await router.sender()
    headers = await router.key()
    secret = headers["Authorization"].removeprefix("Bearer ")
    await router.customer_writes()
    body_text = "Your one-time code is 918273 do not share"

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await router.send(
            {**headers, "X-Correlation-Id": "support-case-42"}, text=body_text
        )
        await router.wait_for(response.json()["id"], headers, "accepted")

    mine = [entry for entry in logs if entry.get("correlation_id") == "support-case-42"]
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
