"""The raw httpx ceiling of the dispatch benchmarks: ``httpx.AsyncClient`` (the client the
dispatcher is written against) keeping ``--concurrency`` POSTs of a Cloud API text message in
flight at all times against the fake Graph API, nothing else; one client by default, or
``--clients`` clients sharing the concurrency (DESIGN.md: httpx's pool gets slower with the
requests in flight per client); httpx's own transport by default, or with ``--transport
aiohttp`` the dispatcher's (adapters/cloud_api/transport.py). Same event loop as ``wa-router
worker`` (uvloop when installed: app/runtime.py ``run_event_loop``).
Counts the answers completed in ``--seconds`` after a short warm-up and prints a BENCH-RESULT
line.

Run: ``python -m tests.bench.httpx_ceiling http://127.0.0.1:PORT --concurrency 64
[--clients 16] --seconds 3``."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx

from adapters.cloud_api.transport import AiohttpTransport
from app.runtime import run_event_loop
from tests.bench.load import RESULT_PREFIX

WARM_UP_SECONDS = 0.5


async def main(args: argparse.Namespace) -> None:
    counted = 0
    errors = 0
    started = deadline = 0.0
    per_client = -(-args.concurrency // args.clients)
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)

    async def sender(client: httpx.AsyncClient, worker: int) -> None:
        nonlocal counted, errors  # started and deadline are set before the senders run
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            body = {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": f"+1555{worker:04d}{n % 1000:03d}",
                "type": "text",
                "text": {"preview_url": False, "body": "bench"},
            }
            try:
                response = await client.post("/v25.0/106540352242922/messages", json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if started <= time.perf_counter() <= deadline:
                if ok:
                    counted += 1
                else:
                    errors += 1

    def transport() -> httpx.AsyncBaseTransport | None:
        if args.transport == "aiohttp":
            return AiohttpTransport(max_connections=per_client)
        return None

    clients = [
        httpx.AsyncClient(
            base_url=args.url,
            limits=limits,
            timeout=httpx.Timeout(10.0),
            headers={"Authorization": "Bearer bench-token"},
            transport=transport(),
        )
        for _ in range(args.clients)
    ]
    # Counted from here: making a client takes a while (its SSL context), it is not sending.
    started = time.perf_counter() + WARM_UP_SECONDS
    deadline = started + args.seconds
    try:
        tasks = [
            asyncio.create_task(sender(clients[i % args.clients], i))
            for i in range(args.concurrency)
        ]
        _, late = await asyncio.wait(tasks, timeout=WARM_UP_SECONDS + args.seconds + 15)
        for task in late:
            task.cancel()
    finally:
        for client in clients:
            await client.aclose()
    result = {"requests": counted, "seconds": args.seconds, "errors": errors}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--transport", choices=("httpx", "aiohttp"), default="httpx")
    run_event_loop(main(parser.parse_args()))
