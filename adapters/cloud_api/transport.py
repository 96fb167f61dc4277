"""httpx's API over aiohttp's connection pool, for the Cloud API client.

httpx's own pool costs CPU per request that grows with the requests in flight
(encode/httpx#3215): against a server 100 ms away, one ``httpx.AsyncClient`` with 256 requests
in flight managed ~70 requests/s on our machines, 64 clients with 4 connections each ~810/s,
and this transport, one aiohttp session with 256 connections, ~1,650/s (``make bench``, the
raw ceiling rows). The code keeps httpx as its API (timeouts, MockTransport in the tests).

What it keeps of httpx's semantics that the dispatcher depends on:

- the ``trace`` extension reports ``http11.send_request_headers.started`` as aiohttp hands the
  request to the socket (its first ``on_request_chunk_sent``: aiohttp sends the headers with
  the body, and its ``on_request_headers_sent`` comes before either is written, from a task
  that may run tens of milliseconds later on a busy loop; counted from there, a sender's pace
  showed 90 arrivals in a second at ``max_mps`` 80), so a send is counted in its sender's pace
  from the moment it left, as with httpcore;
- an error before the request was written is a connect error or a pool timeout (nothing left:
  safe to retry at once); after, a read timeout or a protocol error (Meta may have it). The
  exception's type says which, whatever aiohttp's own class for it.

Bodies are read whole before the response is returned: the Cloud API's are small JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx

HEADERS_SENT = "http11.send_request_headers.started"

Trace = Callable[[str, Any], Awaitable[None]]


@dataclass(slots=True)
class _Progress:
    """One request's progress, handed to aiohttp's trace callbacks."""

    trace: Trace | None
    written: bool = False


async def _on_chunk_sent(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: Any
) -> None:
    """Just before aiohttp writes the request (headers and body together) to the socket."""
    progress = context.trace_request_ctx
    if isinstance(progress, _Progress) and not progress.written:
        progress.written = True
        if progress.trace is not None:
            await progress.trace(HEADERS_SENT, {})


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
    return aiohttp.ClientTimeout(
        total=None,
        # aiohttp's "connect" covers the wait for a pooled connection and the set-up of a new
        # one; httpx splits them into pool and connect.
        connect=_sum(timeouts.get("pool"), timeouts.get("connect")),
        sock_connect=timeouts.get("connect"),
        sock_read=timeouts.get("read"),
    )


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on first use, inside the running loop) for every request."""

    def __init__(self, *, max_connections: int = 256, keepalive_seconds: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            tracing = aiohttp.TraceConfig()
            tracing.on_request_chunk_sent.append(_on_chunk_sent)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    limit_per_host=self._max_connections,
                    keepalive_timeout=self._keepalive_seconds,
                ),
                trace_configs=[tracing],
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        progress = _Progress(trace=request.extensions.get("trace"))
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=request.content or None,
                allow_redirects=False,
                compress=None,
                timeout=_timeout(request),
                trace_request_ctx=progress,
            ) as answer:
                body = await answer.read()
                return httpx.Response(
                    status_code=answer.status,
                    headers=list(answer.raw_headers),
                    content=body,
                    request=request,
                    extensions={"http_version": b"HTTP/1.1"},
                )
        except TimeoutError as exc:
            if progress.written:
                raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
            raise httpx.PoolTimeout(str(exc) or "no connection in time", request=request) from exc
        except aiohttp.ClientError as exc:
            if progress.written:
                raise httpx.RemoteProtocolError(repr(exc), request=request) from exc
            raise httpx.ConnectError(repr(exc), request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
