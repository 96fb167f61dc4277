"""Test doubles: fake the network, not the client (STYLE.md 14)."""

from __future__ import annotations

import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


@dataclass
class Scripted:
    """One scripted answer of the fake Graph API."""

    kind: str = "ok"  # ok | error | timeout | reset
    http_status: int = 200
    code: int | None = None
    title: str = ""
    details: str | None = None


def meta_error(http_status: int, code: int, title: str, details: str | None = None) -> Scripted:
    return Scripted(kind="error", http_status=http_status, code=code, title=title, details=details)


@dataclass
class SentRequest:
    path: str
    headers: httpx.Headers
    body: dict[str, Any]


@dataclass
class FakeGraph:
    """An ``httpx.MockTransport`` handler that answers like the Cloud API and records what it
    was sent. Script answers with :meth:`then`; unscripted sends succeed."""

    requests: list[SentRequest] = field(default_factory=list)
    _script: deque[Scripted] = field(default_factory=deque)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def then(self, *answers: Scripted) -> FakeGraph:
        self._script.extend(answers)
        return self

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(SentRequest(path=request.url.path, headers=request.headers, body=body))
        answer = self._script.popleft() if self._script else Scripted()
        if answer.kind == "timeout":
            raise httpx.ReadTimeout("scripted timeout", request=request)
        if answer.kind == "reset":
            raise httpx.ConnectError("scripted connection refused", request=request)
        if answer.kind == "error":
            return httpx.Response(
                answer.http_status,
                json={
                    "error": {
                        "message": f"(#{answer.code}) {answer.title}",
                        "type": "OAuthException",
                        "code": answer.code,
                        "error_data": {"messaging_product": "whatsapp", "details": answer.details},
                        "fbtrace_id": "FAKETRACE" + str(len(self.requests)),
                    }
                },
            )
        n = next(self._counter)
        return httpx.Response(
            200,
            json={
                "messaging_product": "whatsapp",
                "contacts": [
                    {"input": body.get("to"), "wa_id": str(body.get("to", "")).lstrip("+")}
                ],
                "messages": [{"id": f"wamid.FAKE{n:06d}", "message_status": "accepted"}],
            },
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    @property
    def sent_bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 21, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now
