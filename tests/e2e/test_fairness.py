"""Under concurrent load every client is served in its turn: none waits while others, arriving
later, are answered again and again (the SQLite writer's queue once let newcomers barge, and a
few of 32 clients waited out a whole benchmark run)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import running_router

CLIENTS = 32
ROUNDS = 15


async def answered_in_turn(request: Callable[[int], Awaitable[httpx.Response]], ok: int) -> None:
    """32 clients calling ``request`` until CLIENTS * ROUNDS answers in all: each had its share."""
    answered = [0] * CLIENTS
    enough = asyncio.Event()

    async def client(n: int) -> None:
        while not enough.is_set():
            response = await request(n)
            assert response.status_code == ok, response.text
            answered[n] += 1
            if sum(answered) >= CLIENTS * ROUNDS:
                enough.set()
            await asyncio.sleep(0)  # as a client on a socket would: others get their turn

    await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(CLIENTS))), timeout=120)
    # Served in turn, each client has had about ROUNDS answers by the time the total is reached.
    assert min(answered) >= ROUNDS // 3, answered


async def test_32_clients_sending_at_once_are_all_answered_in_turn(tmp_path: Path) -> None:
    async with running_router(tmp_path, send_rate_per_minute=1_000_000) as router:
        await router.sender()
        headers = await router.key()
        await router.customer_writes()
        await answered_in_turn(lambda n: router.send(headers, text=f"client {n}"), 202)


async def test_32_clients_polling_at_once_are_all_answered_in_turn(tmp_path: Path) -> None:
    async with running_router(tmp_path, read_rate_per_minute=1_000_000) as router:
        await router.sender()
        headers = await router.key()
        await router.customer_writes()
        sent = await router.send(headers, text="poll me")
        path = f"/v1/whatsapp/messages/{sent.json()['id']}"
        await answered_in_turn(lambda _n: router.client.get(path, headers=headers), 200)
