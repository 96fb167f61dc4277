"""A tiny, fast fake of the Cloud API's send route for the dispatch benchmarks (loopback only).

tests/fake_graph_server.py is the scriptable fake of the functional tests; this one does one
thing cheaply, so that it is not what a dispatch figure measures: HTTP/1.1 keep-alive on raw
asyncio streams (uvloop when installed), every ``POST …/{phone_number_id}/messages`` answered
``200`` with a fresh wamid after the configured delay, and its arrival time recorded.

Control routes: ``POST /_reset?delay_ms=N`` forgets the arrivals and sets the delay;
``GET /_arrivals`` returns ``[[time.monotonic(), phone_number_id], …]``, ``GET /_count``
``{"count": n, "first": time of the first}``.

Run: ``python -m tests.bench.fake_graph --port P``."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from urllib.parse import parse_qs, urlsplit

_RUN = format(time.time_ns() % 36**6, "x")


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request off the stream: its head and its body (by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


class FakeGraph:
    def __init__(self) -> None:
        self.delay = 0.0
        self.arrivals: list[tuple[float, str]] = []
        self.ids = itertools.count()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await read_request(reader)
                method, target = head.split(b" ", 2)[:2]
                status, payload = await self.answer(method.decode(), target.decode(), body)
                writer.write(
                    b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (status, len(payload), payload)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        url = urlsplit(target)
        if url.path == "/_arrivals":
            return 200, json.dumps(self.arrivals).encode()
        if url.path == "/_count":
            first = self.arrivals[0][0] if self.arrivals else None
            return 200, json.dumps({"count": len(self.arrivals), "first": first}).encode()
        if url.path == "/_reset":
            self.arrivals = []
            self.delay = float(parse_qs(url.query).get("delay_ms", ["0"])[0]) / 1000
            return 200, b"{}"
        if method != "POST" or not url.path.endswith("/messages"):
            return 404, b'{"error":{"message":"unknown path","code":100}}'
        self.arrivals.append((time.monotonic(), url.path.rsplit("/", 2)[-2]))
        # Only the recipient is read from the body: enough to answer like the Cloud API.
        to = body.split(b'"to":"', 1)[-1].split(b'"', 1)[0] if b'"to":"' in body else b""
        if self.delay:
            await asyncio.sleep(self.delay)
        wamid = f"wamid.BENCH{_RUN}{next(self.ids):09d}".encode()
        return 200, (
            b'{"messaging_product":"whatsapp","contacts":[{"input":"%s","wa_id":"%s"}],'
            b'"messages":[{"id":"%s","message_status":"accepted"}]}' % (to, to.lstrip(b"+"), wamid)
        )


async def main(port: int) -> None:
    fake = FakeGraph()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.port))
    else:
        uvloop.run(main(args.port))
