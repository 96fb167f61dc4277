"""The correlation id: adopted from the client when valid, else generated; on every response,
bound into structlog's contextvars for every line of the request; one canonical log line, and
the request counted in the metrics by its route template."""

from __future__ import annotations

import time

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.ids import CORRELATION_ID, correlation_id
from app.metrics import Metrics

_log = structlog.get_logger("wa_router.http")
HEADER = b"x-correlation-id"
#: Request-state key of headers (rate limits) to add to whatever response the request gets.
RATE_LIMIT_HEADERS = "rate_limit_headers"


def correlation_middleware(app: ASGIApp, metrics: Metrics | None = None) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        supplied = next((v for k, v in scope["headers"] if k == HEADER), None)
        text = supplied.decode("latin-1") if supplied is not None else ""
        cid = text if CORRELATION_ID.fullmatch(text) else correlation_id()
        state = scope.setdefault("state", {})
        state["correlation_id"] = cid
        # Bound with tokens and reset afterwards (not cleared): a request made in-process from
        # inside another one (the sandbox posting its webhooks) leaves the outer one's id intact.
        tokens = structlog.contextvars.bind_contextvars(correlation_id=cid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((HEADER, cid.encode()))
                extra: dict[str, str] = state.get(RATE_LIMIT_HEADERS) or {}
                if extra:
                    present = {name.lower() for name, _ in headers}
                    headers.extend(
                        (name.lower().encode(), value.encode())
                        for name, value in extra.items()
                        if name.lower().encode() not in present
                    )
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            _log.info(
                "request",
                method=scope.get("method"),
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            if metrics is not None:
                # The template ("/v1/whatsapp/messages/{message_id}"), never the raw path.
                route = scope.get("path_template")
                metrics.request(method=scope["method"], route=route, status=status)
            structlog.contextvars.reset_contextvars(**tokens)

    return middleware
