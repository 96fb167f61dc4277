"""Idempotency-Key on both send routes (API.md "Idempotency-Key")."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from adapters.db import idempotency as idempotency_repo
from adapters.db.engine import Database
from adapters.db.tables import clients, idempotency_keys
from tests.conftest import fresh_postgres_database
from tests.e2e.conftest import Router, running_router
from tests.e2e.test_bad_input import assert_problem

BODY = {"to": "+14155552671", "text": "Your order has shipped", "metadata": {"o": "991"}}


async def _ready(router: Router, client: str = "crm") -> dict[str, str]:
    await router.sender()
    headers = await router.key(client)
    await router.customer_writes()
    return headers


async def _post(
    router: Router,
    headers: dict[str, str],
    key: str,
    body: object = BODY,
    path: str = "/v1/whatsapp/messages",
) -> object:
    return await router.client.post(path, json=body, headers={**headers, "Idempotency-Key": key})


async def test_a_replay_answers_the_original_202_and_sends_once(any_router: Router) -> None:
    headers = await _ready(any_router)

    first = await _post(any_router, headers, "order-991")
    await any_router.wait_for(first.json()["id"], headers, "accepted")
    again = await any_router.client.post(
        "/v1/whatsapp/messages",
        content=json.dumps(
            {"metadata": {"o": "991"}, "text": "Your order has shipped", "to": "+14155552671"},
            indent=4,
        ),  # same request, other spelling
        headers={**headers, "Idempotency-Key": "order-991", "Content-Type": "application/json"},
    )

    assert first.status_code == again.status_code == 202
    assert again.content == first.content  # the original body, status queued and all
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["location"] == first.headers["location"]
    assert await any_router.stored_messages() == 1
    assert len(any_router.graph.requests) == 1


async def test_the_same_key_with_another_body_is_refused(any_router: Router) -> None:
    headers = await _ready(any_router)
    assert (await _post(any_router, headers, "k1")).status_code == 202

    other = await _post(any_router, headers, "k1", {**BODY, "text": "Something else"})
    other_route = await _post(
        any_router,
        headers,
        "k1",
        {"to": "+14155552671", "template": {"name": "hello_world", "language": "en_US"}},
        path="/v1/whatsapp/templates",
    )

    assert_problem(other, 422, "idempotency_key_reused", "Idempotency-Key")
    assert_problem(other_route, 422, "idempotency_key_reused", "Idempotency-Key")
    assert await any_router.stored_messages() == 1


async def test_keys_belong_to_one_client(router: Router) -> None:
    mine = await _ready(router, "crm-a")
    theirs = await router.key("crm-b")

    a = await _post(router, mine, "shared-key")
    b = await _post(router, theirs, "shared-key")

    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]
    assert "idempotent-replayed" not in b.headers


async def test_only_successes_are_stored_so_a_refused_request_can_be_retried(
    router: Router,
) -> None:
    await router.sender()
    headers = await router.key()

    refused = await _post(router, headers, "retry-me")
    await router.customer_writes()
    retried = await _post(router, headers, "retry-me")

    assert_problem(refused, 422, "outside_service_window")
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "é-accent", "line\x7f"])
async def test_malformed_keys_are_refused(router: Router, key: str) -> None:
    headers = await _ready(router)

    response = await router.client.post(
        "/v1/whatsapp/messages",
        json=BODY,
        headers=[
            *((k.encode(), v.encode()) for k, v in headers.items()),
            (b"Idempotency-Key", key.encode("latin-1")),
        ],
    )

    assert_problem(response, 422, "validation_failed", "Idempotency-Key")
    assert await router.stored_messages() == 0


async def test_the_longest_printable_key_is_accepted(router: Router) -> None:
    headers = await _ready(router)
    key = "".join(chr(c) for c in range(0x20, 0x7F)) * 3  # 285 characters …
    assert (await _post(router, headers, key[:255])).status_code == 202


async def test_an_expired_key_starts_afresh(any_router: Router) -> None:
    router = any_router
    headers = await _ready(router)
    first = await _post(router, headers, "day-old")
    async with router.services.db.write() as conn:
        await conn.execute(
            update(idempotency_keys).values(expires_at=idempotency_keys.c.created_at)
        )

    again = await _post(router, headers, "day-old")

    assert again.status_code == 202
    assert again.json()["id"] != first.json()["id"]


async def test_fifty_concurrent_identical_requests_create_one_message(any_router: Router) -> None:
    headers = await _ready(any_router)

    responses = await asyncio.gather(*(_post(any_router, headers, "burst-1") for _ in range(50)))

    codes = sorted({r.status_code for r in responses})
    assert set(codes) <= {202, 409}, codes
    accepted = [r for r in responses if r.status_code == 202]
    assert len({r.json()["id"] for r in accepted}) == 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert_problem(conflict, 409, "idempotency_in_progress")
        assert int(conflict.headers["retry-after"]) >= 1
    await any_router.wait_for(accepted[0].json()["id"], headers, "accepted")
    assert await any_router.stored_messages() == 1
    assert len(any_router.graph.requests) == 1


async def test_concurrent_retries_after_completion_all_get_the_replay(any_router: Router) -> None:
    headers = await _ready(any_router)
    first = await _post(any_router, headers, "done-1")

    retries = await asyncio.gather(*(_post(any_router, headers, "done-1") for _ in range(20)))

    assert {r.status_code for r in retries} == {202}
    assert {r.headers["idempotent-replayed"] for r in retries} == {"true"}
    assert {r.content for r in retries} == {first.content}


async def test_a_replay_is_traceable_by_the_retrys_correlation_id(router: Router) -> None:
    headers = {**(await _ready(router)), "X-Correlation-Id": "first-try"}
    first = await _post(router, headers, "traced")
    support = await router.key("support", scopes=["support:read"])

    await _post(router, {**headers, "X-Correlation-Id": "second-try"}, "traced")
    trace = (await router.client.get("/v1/support/correlations/second-try", headers=support)).json()

    [event] = trace["events"]
    assert event["kind"] == "request"
    assert event["message_id"] == first.json()["id"]
    assert event["detail"]["replayed"] is True
    assert event["detail"]["status_code"] == 202


def assert_replay_of(first: Any, retry: Any, trace: Any) -> None:
    """``retry`` got ``first``'s 202 again, and its correlation id's trace has the replay."""
    assert retry.status_code == 202
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    [event] = trace.json()["events"]
    assert event["message_id"] == first.json()["id"]
    assert event["detail"]["replayed"] is True


@pytest.mark.postgres
async def test_while_another_process_holds_a_keys_lock_a_retry_is_answered_from_what_is_stored(
    tmp_path: Path,
) -> None:
    """Across API processes a key's advisory lock says someone is on it. That someone may be
    another retry of a request already answered: then the stored response is the answer (it
    was 409 for the retry that met the lock, seen when two retries hit both API processes at
    once), with its own event for support, or 422 for another body. With nothing stored, or
    only an expired response, the original is still running: 409."""
    async with (
        fresh_postgres_database() as url,
        running_router(tmp_path, database_url=url) as router,
    ):
        headers = await _ready(router)
        support = await router.key("support", scopes=["support:read"])
        first = await _post(router, headers, "held-1")
        await _post(router, headers, "held-3")
        async with router.services.db.write() as conn:
            await conn.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.key == "held-3")
                .values(expires_at=idempotency_keys.c.created_at)
            )
        other_process = Database(url)
        try:
            async with other_process.write() as conn:
                client_id = await conn.scalar(select(clients.c.id).where(clients.c.name == "crm"))
                for key in ("held-1", "held-2", "held-3"):
                    assert await idempotency_repo.try_lock(conn, str(client_id), key)
                retry = await _post(router, {**headers, "X-Correlation-Id": "retry-held"}, "held-1")
                other_body = await _post(router, headers, "held-1", {**BODY, "text": "other"})
                running = await _post(router, headers, "held-2")
                expired = await _post(router, headers, "held-3")
        finally:
            await other_process.dispose()
        trace = await router.client.get("/v1/support/correlations/retry-held", headers=support)
        stored = await router.stored_messages()
    assert_replay_of(first, retry, trace)
    assert_problem(other_body, 422, "idempotency_key_reused", "Idempotency-Key")
    assert_problem(running, 409, "idempotency_in_progress", "Idempotency-Key")
    assert_problem(expired, 409, "idempotency_in_progress", "Idempotency-Key")
    assert stored == 2  # held-1's and held-3's first messages, nothing more


async def test_a_retry_while_its_key_is_still_in_this_process_hands_reads_what_is_stored(
    any_router: Router,
) -> None:
    """The moment between an original's commit and the process letting go of its key (held
    here by hand): a retry is answered from a read, the replay with its event once a response
    is stored, 422 for another body, and 409 while nothing is stored."""
    router = any_router
    headers = await _ready(router)
    support = await router.key("support", scopes=["support:read"])
    first = await _post(router, headers, "in-hand-1")
    async with router.services.db.read() as conn:
        client_id = await conn.scalar(select(clients.c.id).where(clients.c.name == "crm"))
    in_hand = router.services.sending._inflight
    in_hand.update({(str(client_id), "in-hand-1"), (str(client_id), "in-hand-2")})

    retry = await _post(router, {**headers, "X-Correlation-Id": "retry-in-hand"}, "in-hand-1")
    other_body = await _post(router, headers, "in-hand-1", {**BODY, "text": "other"})
    running = await _post(router, headers, "in-hand-2")

    trace = await router.client.get("/v1/support/correlations/retry-in-hand", headers=support)
    assert_replay_of(first, retry, trace)
    assert_problem(other_body, 422, "idempotency_key_reused", "Idempotency-Key")
    assert_problem(running, 409, "idempotency_in_progress", "Idempotency-Key")
    assert await router.stored_messages() == 1
