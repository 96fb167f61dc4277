"""valid_until on both send routes, and DELETE of a queued message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.db import outbox
from tests.e2e.conftest import Router, running_router
from tests.e2e.test_bad_input import assert_problem


@pytest.fixture
async def queue_only(tmp_path: Path) -> AsyncIterator[Router]:
    """No dispatcher in this process: messages stay queued."""
    async with running_router(tmp_path, worker="off") as router:
        await router.sender()
        await router.customer_writes()
        yield router


def _in(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


WRONG_DEADLINES = {
    "past": lambda: _in(seconds=-1),
    "beyond-30-days": lambda: _in(days=31),
    "no-time-zone": lambda: "2030-01-01T00:00:00",
    "not-a-date": lambda: "tomorrow",
    "a-number": lambda: 1893456000,
}


@pytest.mark.parametrize("case", sorted(WRONG_DEADLINES))
async def test_a_wrong_valid_until_names_the_param(queue_only: Router, case: str) -> None:
    headers = await queue_only.key()
    valid_until = WRONG_DEADLINES[case]()

    response = await queue_only.send(headers, text="hi", valid_until=valid_until)

    assert_problem(response, 422, "validation_failed", "valid_until")
    assert await queue_only.stored_messages() == 0


async def test_valid_until_is_kept_on_both_routes(queue_only: Router) -> None:
    headers = await queue_only.key()
    deadline = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)

    text = await queue_only.send(headers, text="hi", valid_until=deadline.isoformat())
    template = await queue_only.client.post(
        "/v1/whatsapp/templates",
        headers=headers,
        json={
            "to": "+14155552671",
            "template": {"name": "hello_world", "language": "en_US"},
            "valid_until": deadline.isoformat(),
        },
    )

    for response in (text, template):
        assert response.status_code == 202, response.text
        assert response.json()["valid_until"] == deadline.isoformat().replace("+00:00", "Z")


async def test_a_queued_message_can_be_cancelled_once(queue_only: Router) -> None:
    headers = await queue_only.key()
    message = (await queue_only.send(headers, text="hi")).json()
    url = f"/v1/whatsapp/messages/{message['id']}"

    cancelled = await queue_only.client.delete(url, headers=headers)
    again = await queue_only.client.delete(url, headers=headers)

    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "failed"
    assert body["error"] == {
        "code": "cancelled",
        "title": "Cancelled",
        "detail": "cancelled by the client before it was sent",
        "source": "router",
    }
    assert [h["status"] for h in body["history"]] == ["queued", "failed"]
    problem = assert_problem(again, 409, "not_cancellable")
    assert "already failed" in problem["detail"]


async def test_a_message_being_sent_cannot_be_cancelled(queue_only: Router) -> None:
    headers = await queue_only.key()
    message = (await queue_only.send(headers, text="hi")).json()
    async with queue_only.services.db.write() as conn:
        [job] = await outbox.claim_due(
            conn,
            owner="elsewhere",
            now=datetime.now(UTC),
            lease=timedelta(seconds=30),
            limit=1,
            skip_locked=False,
        )

    response = await queue_only.client.delete(f"/v1/whatsapp/messages/{job.id}", headers=headers)

    problem = assert_problem(response, 409, "not_cancellable")
    assert "being sent" in problem["detail"]
    assert job.id == message["id"]


async def test_cancel_is_scoped_to_the_client_and_the_send_scope(queue_only: Router) -> None:
    mine = await queue_only.key("crm-a")
    theirs = await queue_only.key("crm-b")
    reader = await queue_only.key("crm-a", scopes=["messages:read"])
    message = (await queue_only.send(mine, text="hi")).json()
    url = f"/v1/whatsapp/messages/{message['id']}"

    assert_problem(await queue_only.client.delete(url, headers=theirs), 404, "not_found")
    assert_problem(await queue_only.client.delete(url, headers=reader), 403, "insufficient_scope")
    assert (await queue_only.client.get(url, headers=mine)).json()["status"] == "queued"
