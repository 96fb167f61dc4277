"""The Cloud API transport (httpx over aiohttp) against a real loopback server: what the
dispatcher depends on is the answer, the moment the request was written, and whether a failure
happened before that moment (safe to resend) or after (Meta may have the message)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from adapters.cloud_api.client import CloudApiClient, GraphHttp
from adapters.cloud_api.errors import CloudApiUnavailable
from adapters.cloud_api.transport import AiohttpTransport
from tests.bench.fake_graph import read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SENT = (
    b'{"messaging_product":"whatsapp","contacts":[{"input":"+1","wa_id":"1"}],'
    b'"messages":[{"id":"wamid.X"}]}'
)


def answer(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` on a free loopback port; on leaving, stop every connection's task."""
    tasks: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            writer.close()

    srv = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await srv.wait_closed()


@asynccontextmanager
async def client(base_url: str, **timeouts: float) -> AsyncIterator[GraphHttp]:
    timeout = httpx.Timeout(**{"timeout": 5.0, **timeouts})
    async with GraphHttp(
        base_url=base_url, timeout=timeout, transport=AiohttpTransport(max_connections=8)
    ) as http:
        yield http


async def test_a_send_returns_metas_answer_and_reports_the_write_before_it() -> None:
    seen: list[tuple[bytes, bytes]] = []
    events: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        events.append("server read it")
        writer.write(answer(SENT))
        await writer.drain()

    async with server(handler) as url, client(url) as http:
        api = CloudApiClient(http, token="t0ken", version="v25.0")
        result = await api.send(
            "106540352242922",
            {"messaging_product": "whatsapp", "to": "+1", "type": "text"},
            on_write=lambda: events.append("written"),
        )
    assert result.wamid == "wamid.X"
    assert events == ["written", "server read it"]
    head, body = seen[0]
    assert head.startswith(b"POST /v25.0/106540352242922/messages HTTP/1.1")
    assert b"authorization: bearer t0ken" in head.lower()
    assert body == b'{"messaging_product":"whatsapp","to":"+1","type":"text"}'


async def test_a_compressed_error_body_is_read_like_httpx_reads_it() -> None:
    error = b'{"error":{"message":"(#131026) Message undeliverable","code":131026}}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            answer(
                gzip.compress(error), status="400 Bad Request", extra=b"Content-Encoding: gzip\r\n"
            )
        )
        await writer.drain()

    async with server(handler) as url, client(url) as http:
        response = await http.post("/v25.0/1/messages", content=b"{}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 131026


async def test_nobody_listening_is_a_failure_before_the_write() -> None:
    async with server(read_request_and_hang) as url:
        pass  # closed: the port refuses connections now
    written: list[str] = []
    async with client(url) as http:
        api = CloudApiClient(http, token="t", version="v25.0")
        with pytest.raises(CloudApiUnavailable) as failure:
            await api.send("1", {"to": "+1"}, on_write=lambda: written.append("written"))
    assert failure.value.maybe_sent is False
    assert written == []


async def read_request_and_hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(30)


async def test_no_answer_after_the_write_is_a_maybe_sent_read_timeout() -> None:
    async with server(read_request_and_hang) as url, client(url, read=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v25.0/1/messages", content=b"{}")
        api = CloudApiClient(http, token="t", version="v25.0")
        with pytest.raises(CloudApiUnavailable) as failure:
            await api.send("1", {"to": "+1"})
    assert failure.value.maybe_sent is True


async def test_a_connection_dropped_after_the_write_may_have_reached_meta() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()  # reset, no answer

    async with server(handler) as url, client(url) as http:
        api = CloudApiClient(http, token="t", version="v25.0")
        with pytest.raises(CloudApiUnavailable) as failure:
            await api.send("1", {"to": "+1"})
    assert failure.value.maybe_sent is True


async def test_many_requests_in_flight_share_the_pool_and_all_get_their_answer() -> None:
    active = 0
    peak = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        while True:
            _, body = await read_request(reader)
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.05)
            active -= 1
            writer.write(answer(body))
            await writer.drain()

    async with server(handler) as url, client(url) as http:

        async def one(n: int) -> Any:
            return (await http.post("/x", content=str(n).encode())).content

        bodies = await asyncio.gather(*(one(n) for n in range(40)))
    assert bodies == [str(n).encode() for n in range(40)]
    assert peak == 8  # the transport's connection limit, all of it used


async def test_the_write_is_reported_when_the_request_is_on_the_socket() -> None:
    """The sender's pace counts a send from the moment reported here: reporting it before the
    bytes are handed to the socket (aiohttp's headers-sent signal comes a loop turn earlier)
    let a busy dispatcher exceed max_mps at Meta. At the next turn of the loop after the
    report, the request must already be readable by the server."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    ready = threading.Event()
    checked = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        ready.set()
        checked.wait(5)  # not reading before the check peeks at what has arrived
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            data += conn.recv(65536)
        conn.sendall(answer(SENT))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    readable_next_turn: list[bool] = []

    def check() -> None:
        try:
            readable_next_turn.append(
                bool(accepted[0].recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            )
        except BlockingIOError:
            readable_next_turn.append(False)
        checked.set()

    def on_write() -> None:
        ready.wait(5)  # the connection is accepted before anything is written
        asyncio.get_running_loop().call_soon(check)

    try:
        async with client(f"http://127.0.0.1:{port}") as http:
            api = CloudApiClient(http, token="t", version="v25.0")
            result = await api.send("1", {"to": "+1"}, on_write=on_write)
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert result.wamid == "wamid.X"
    assert readable_next_turn == [True]
