"""The Python load generator, for machines without wrk: N keep-alive connections on raw asyncio
streams (uvloop when installed), each sending the next request of the file as soon as its
previous answer is read, for a fixed duration. Prints the same BENCH-RESULT line as load.lua.

Slower than wrk (it is Python, on the same cores as the server), so its figures are a floor.

Run: ``python -m tests.bench.loadgen http://127.0.0.1:PORT REQUESTS_FILE --connections 32
--seconds 5 [--unique-keys]``."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from tests.bench.load import RESULT_PREFIX, Request, read_requests


def encode(request: Request, host: str, key: str | None) -> bytes:
    headers = {"Host": host, **request.headers}
    if key is not None:
        headers["Idempotency-Key"] = key
    if request.body:
        headers["Content-Length"] = str(len(request.body))
    head = f"{request.method} {request.path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return head.encode() + b"\r\n" + request.body


class Run:
    def __init__(self, url: str, requests: list[Request], *, unique_keys: bool) -> None:
        split = urlsplit(url)
        self.host, self.port = split.hostname or "127.0.0.1", split.port or 80
        netloc = split.netloc
        self.unique_keys = unique_keys
        self.requests = requests
        self.raw = [encode(r, netloc, None) for r in requests]
        self.netloc = netloc
        self.cursor = itertools.count()
        self.prefix = f"bench-py-{time.time_ns()}-"
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0

    def next_request(self) -> bytes:
        n = next(self.cursor)
        i = n % len(self.requests)
        if not self.unique_keys:
            return self.raw[i]
        return encode(self.requests[i], self.netloc, f"{self.prefix}{n}")

    async def connection(self, deadline: float) -> None:
        reader = writer = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                assert reader is not None
                started = time.perf_counter()
                writer.write(self.next_request())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length, close = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                if length:
                    await reader.readexactly(length)
                finished = time.perf_counter()
                if finished <= deadline:
                    self.latencies.append(finished - started)
                    self.statuses[status] += 1
                if close:
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    run = Run(args.url, read_requests(Path(args.requests)), unique_keys=args.unique_keys)
    started = time.perf_counter()
    deadline = started + args.seconds
    tasks = [asyncio.create_task(run.connection(deadline)) for _ in range(args.connections)]
    # A connection whose answer never comes must not hold the run past its bound.
    _, late = await asyncio.wait(tasks, timeout=args.seconds + 15)
    for task in late:
        task.cancel()
        run.errors += 1
    result = {
        "requests": len(run.latencies),
        "seconds": args.seconds,
        "p50_ms": percentile(run.latencies, 50) * 1000,
        "p99_ms": percentile(run.latencies, 99) * 1000,
        "errors": run.errors,
        "statuses": {str(code): n for code, n in run.statuses.items()},
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("requests")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--unique-keys", action="store_true")
    arguments = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(arguments))
    else:
        uvloop.run(main(arguments))
