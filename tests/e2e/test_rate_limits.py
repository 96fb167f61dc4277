"""Per-client budgets (GCRA, kept in the database) with an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Router, running_router
from tests.e2e.test_bad_input import assert_problem
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def limited(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Router]:
    async with running_router(
        tmp_path, clock=clock, send_rate_per_minute=5, read_rate_per_minute=3
    ) as router:
        await router.sender()
        await router.customer_writes(at=clock.now)
        yield router


async def test_the_send_budget_is_exact_and_refills_evenly(
    limited: Router, clock: FakeClock
) -> None:
    headers = await limited.key(scopes=["messages:send"])

    answers = [await limited.send(headers, text=f"#{i}") for i in range(6)]

    assert [a.status_code for a in answers] == [202] * 5 + [429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
    refused = assert_problem(answers[5], 429, "rate_limited")
    assert refused["correlation_id"]
    assert answers[5].headers["retry-after"] == "12"  # 60 s / 5
    assert await limited.stored_messages() == 5

    clock.advance(seconds=11)
    assert (await limited.send(headers, text="early")).status_code == 429
    clock.advance(seconds=1)
    assert (await limited.send(headers, text="on time")).status_code == 202
    assert (await limited.send(headers, text="again")).status_code == 429


async def test_every_response_of_a_limited_route_carries_the_headers(
    limited: Router, clock: FakeClock
) -> None:
    headers = await limited.key()

    ok = await limited.send(headers, text="hi")
    invalid = await limited.send(headers, text="")

    for response in (ok, invalid):
        assert response.headers["x-ratelimit-limit"] == "5"
        assert int(response.headers["x-ratelimit-reset"]) >= int(clock.now.timestamp())
        assert response.headers["ratelimit-policy"] == '"send";q=5;w=60'
        assert response.headers["ratelimit"].startswith('"send";r=')
    assert ok.headers["ratelimit"] == '"send";r=4;t=12'
    assert invalid.headers["x-ratelimit-remaining"] == "3"  # a refused request is counted too


async def test_reads_have_their_own_budget(limited: Router) -> None:
    headers = await limited.key()
    message = (await limited.send(headers, text="hi")).json()
    url = f"/v1/whatsapp/messages/{message['id']}"

    reads = [await limited.client.get(url, headers=headers) for _ in range(4)]

    assert [r.status_code for r in reads] == [200, 200, 200, 429]
    assert reads[0].headers["ratelimit-policy"] == '"read";q=3;w=60'
    assert (await limited.send(headers, text="sends still go")).status_code == 202


async def test_clients_do_not_share_a_budget(limited: Router) -> None:
    a = await limited.key("crm-a")
    b = await limited.key("crm-b")
    for _ in range(5):
        assert (await limited.send(a, text="x")).status_code == 202

    assert (await limited.send(a, text="x")).status_code == 429
    assert (await limited.send(b, text="x")).status_code == 202


async def test_keys_of_one_client_share_its_budget(limited: Router) -> None:
    first = await limited.key("crm")
    second = await limited.key("crm")
    for _ in range(5):
        assert (await limited.send(first, text="x")).status_code == 202

    assert (await limited.send(second, text="x")).status_code == 429


async def test_the_hourly_budget_answers_when_it_is_tighter(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with running_router(
        tmp_path, clock=clock, send_rate_per_minute=60, send_rate_per_hour=3
    ) as router:
        await router.sender()
        await router.customer_writes(at=clock.now)
        headers = await router.key()

        answers = [await router.send(headers, text="x") for _ in range(4)]

        assert [a.status_code for a in answers] == [202, 202, 202, 429]
        assert answers[0].headers["x-ratelimit-limit"] == "3"
        assert answers[0].headers["ratelimit-policy"] == (
            '"send";q=60;w=60, "send_hour";q=3;w=3600'
        )
        assert answers[3].headers["retry-after"] == "1200"  # 3600 s / 3
        clock.advance(seconds=1200)
        assert (await router.send(headers, text="x")).status_code == 202


async def test_failed_authentication_is_limited_per_address(limited: Router) -> None:
    good = await limited.key()
    for _ in range(30):
        response = await limited.send({"Authorization": "Bearer guess"}, text="x")
        assert response.status_code == 401

    blocked = await limited.send({"Authorization": "Bearer guess"}, text="x")
    even_good = await limited.send(good, text="x")

    assert_problem(blocked, 429, "rate_limited")
    assert int(blocked.headers["retry-after"]) >= 1
    assert_problem(even_good, 429, "rate_limited")


async def test_concurrent_guesses_are_answered_by_the_atomic_budget(limited: Router) -> None:
    import asyncio

    answers = await asyncio.gather(
        *(limited.send({"Authorization": f"Bearer guess-{i}"}, text="x") for i in range(100))
    )

    codes = [a.status_code for a in answers]
    assert codes.count(401) == 30
    assert codes.count(429) == 70
