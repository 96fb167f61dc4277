"""A fake Graph API server for tests that run real processes (loopback only).

``POST /{version}/{phone_number_id}/messages`` answers like the Cloud API (or as scripted);
``POST /_script`` queues answers (``[{"kind": "error", "http_status": 500, "code": 131000}]``)
and/or sets ``{"delay": seconds}``; ``GET /_requests`` returns what was received.

Run: ``python -m tests.fake_graph_server --port P``."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from collections import deque
from typing import Any

import uvicorn

Scope = dict[str, Any]


class FakeGraphServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: deque[dict[str, Any]] = deque()
        self.delay = 0.0
        self.ids = itertools.count()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload = await self.answer(scope, body)
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def answer(self, scope: Scope, body: bytes) -> tuple[int, Any]:
        path = scope["path"]
        if path == "/_requests":
            return 200, self.requests
        if path == "/_script":
            command = json.loads(body)
            if isinstance(command, dict):
                self.delay = float(command.get("delay", self.delay))
                command = command.get("answers", [])
            self.script.extend(command)
            return 200, {"queued": len(self.script), "delay": self.delay}
        if not path.endswith("/messages"):
            return 404, {"error": {"message": "unknown path", "code": 100}}
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        sent = json.loads(body)
        self.requests.append(
            {"path": path, "authorization": headers.get("authorization"), "body": sent}
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.script.popleft() if self.script else {"kind": "ok"}
        if answer.get("kind") == "error":
            code = answer.get("code")
            return int(answer.get("http_status", 400)), {
                "error": {
                    "message": f"(#{code}) {answer.get('title', 'scripted')}",
                    "type": "OAuthException",
                    "code": code,
                    "error_data": {"details": answer.get("details")},
                    "fbtrace_id": f"FAKE{len(self.requests)}",
                }
            }
        n = next(self.ids)
        return 200, {
            "messaging_product": "whatsapp",
            "contacts": [{"input": sent.get("to"), "wa_id": str(sent.get("to", "")).lstrip("+")}],
            "messages": [{"id": f"wamid.SRV{n:06d}", "message_status": "accepted"}],
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(FakeGraphServer(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
