"""A fake Graph API server for tests that run real processes (loopback only).

``POST /{version}/{phone_number_id}/messages`` answers like the Cloud API (or as scripted);
``GET /_requests`` returns what was received, each request with its arrival time, taken as its
first bytes are parsed (``at``: ``time.monotonic()``, comparable across processes on Linux;
``wall``: ``time.time()``),
its ``phone_number_id``, ``to``, ``callback`` (our ``biz_opaque_callback_data``) and the
``answer`` it got.

``POST /_script`` changes the script (every key optional):

- ``answers``: answers queued for the next requests, whoever they are for;
- ``by_to`` / ``by_sender``: ``{to or phone_number_id: [answers]}``, queued for that
  recipient (``+`` optional) or sender only; these go before ``answers``;
- ``sender_default``: ``{phone_number_id: answer or mix}``, once that sender's queue is empty;
- ``default``: the answer (or mix) when nothing queued applies, ``"ok"`` at first;
- ``mix`` and ``seed``: shorthand for ``default: {"mix": ..., "seed": ...}``, e.g.
  ``{"mix": {"ok": 0.8, "error:500:131000": 0.1, "hang": 0.05, "close": 0.05}, "seed": 1}``;
- ``delay``: seconds (or ``[low, high]``, drawn uniformly) before every answer;
- ``reset``: forget the script and the requests first.

An answer is ``"ok"``, ``"close"``, ``"hang"`` / ``"hang:SECONDS"``, ``"error:HTTP:CODE"``, or
the same as an object: ``{"kind": "error", "http_status": 400, "code": 131047, "title": …,
"details": …}``, ``{"kind": "hang", "seconds": 30}``. ``hang`` answers ``ok`` only after
``seconds`` (30 by default: past any attempt deadline of the router), ``close`` drops the
connection without a byte of answer.

Run: ``python -m tests.fake_graph_server --port P``."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import time
from collections import deque
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Scope = dict[str, Any]
Answer = dict[str, Any]

#: Returned by the ASGI app instead of None: uvicorn then closes the connection without
#: writing anything (an app must return None; uvicorn's answer to one that does not is to
#: close the transport), which is what a connection reset by Meta's edge looks like to httpx.
DROP_CONNECTION = "fake-graph-drops-this-connection"
HANG_SECONDS = 30.0


def parse_answer(spec: str | Answer) -> Answer:
    """``"error:500:131000"`` → ``{"kind": "error", "http_status": 500, "code": 131000}``."""
    if isinstance(spec, dict):
        return spec
    kind, *rest = spec.split(":")
    if kind == "error":
        status = int(rest[0]) if rest else 400
        code = int(rest[1]) if len(rest) > 1 and rest[1] else None
        return {"kind": "error", "http_status": status, "code": code}
    if kind == "hang":
        return {"kind": "hang", "seconds": float(rest[0]) if rest else HANG_SECONDS}
    if kind in ("ok", "close"):
        return {"kind": kind}
    raise ValueError(f"unknown answer {spec!r}")


def label(answer: Answer) -> str:
    if answer.get("kind") == "error":
        return f"error:{answer.get('http_status', 400)}:{answer.get('code')}"
    return str(answer.get("kind", "ok"))


class Choice:
    """One fixed answer, or a seeded random draw from a mix of them."""

    def __init__(self, spec: str | Answer) -> None:
        self.fixed: Answer | None = None
        if isinstance(spec, dict) and "mix" in spec:
            mix: dict[str, float] = spec["mix"]
            self.answers = [parse_answer(name) for name in mix]
            self.weights = list(mix.values())
            self.rng = random.Random(spec.get("seed", 0))
        else:
            self.fixed = parse_answer(spec)

    def draw(self) -> Answer:
        if self.fixed is not None:
            return self.fixed
        return self.rng.choices(self.answers, self.weights)[0]


def _digits(to: str) -> str:
    return to.lstrip("+")


class FakeGraphServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.ids = itertools.count()
        self.reset()

    def reset(self) -> None:
        self.requests.clear()
        self.script: deque[Answer] = deque()
        self.by_to: dict[str, deque[Answer]] = {}
        self.by_sender: dict[str, deque[Answer]] = {}
        self.sender_default: dict[str, Choice] = {}
        self.default = Choice("ok")
        self.delay: tuple[float, float] = (0.0, 0.0)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> str | None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answered = await self.answer(scope, body)
        if answered is None:
            return DROP_CONNECTION
        status, payload = answered
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})
        return None

    def configure(self, command: Any) -> dict[str, Any]:
        if not isinstance(command, dict):  # the first form: a bare list of answers
            command = {"answers": command}
        if command.get("reset"):
            self.reset()
        if "delay" in command:
            delay = command["delay"]
            low, high = (delay, delay) if isinstance(delay, int | float) else delay
            self.delay = (float(low), float(high))
        self.script.extend(parse_answer(a) for a in command.get("answers", []))
        for to, answers in command.get("by_to", {}).items():
            self.by_to.setdefault(_digits(to), deque()).extend(map(parse_answer, answers))
        for sender, answers in command.get("by_sender", {}).items():
            self.by_sender.setdefault(sender, deque()).extend(map(parse_answer, answers))
        for sender, spec in command.get("sender_default", {}).items():
            self.sender_default[sender] = Choice(spec)
        if "mix" in command:
            self.default = Choice({"mix": command["mix"], "seed": command.get("seed", 0)})
        if "default" in command:
            self.default = Choice(command["default"])
        return {"queued": len(self.script), "delay": self.delay[1]}

    def pick(self, sender: str, to: str) -> Answer:
        for queue in (self.by_to.get(_digits(to)), self.by_sender.get(sender), self.script):
            if queue:
                return queue.popleft()
        if sender in self.sender_default:
            return self.sender_default[sender].draw()
        return self.default.draw()

    async def answer(self, scope: Scope, body: bytes) -> tuple[int, Any] | None:
        """(status, JSON body), or None to drop the connection."""
        path = scope["path"]
        if path == "/_requests":
            return 200, self.requests
        if path == "/_script":
            return 200, self.configure(json.loads(body))
        if not path.endswith("/messages"):
            return 404, {"error": {"message": "unknown path", "code": 100}}
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        sent = json.loads(body)
        sender = path.rstrip("/").split("/")[-2]
        at, wall = scope.get("state", {}).get(ARRIVED, (time.monotonic(), time.time()))
        to = str(sent.get("to", ""))
        answer = self.pick(sender, to)
        self.requests.append(
            {
                "path": path,
                "authorization": headers.get("authorization"),
                "body": sent,
                "phone_number_id": sender,
                "to": to,
                "callback": sent.get("biz_opaque_callback_data"),
                "at": at,
                "wall": wall,
                "answer": label(answer),
            }
        )
        low, high = self.delay
        if high > 0:
            await asyncio.sleep(random.uniform(low, high))
        kind = answer.get("kind", "ok")
        if kind == "close":
            return None
        if kind == "hang":
            await asyncio.sleep(float(answer.get("seconds", HANG_SECONDS)))
        if kind == "error":
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
            "contacts": [{"input": to, "wa_id": _digits(to)}],
            "messages": [{"id": f"wamid.SRV{n:06d}", "message_status": "accepted"}],
        }


class _QuietDrops(logging.Filter):
    """uvicorn logs the connections we drop on purpose as errors: keep the output for real
    ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        return DROP_CONNECTION not in record.getMessage()


#: Request-state key of (monotonic, wall) when the request's first bytes were parsed.
ARRIVED = "fake_graph_arrived"


class _DatedOnArrival(HttpToolsProtocol):
    """Dates each request as its first bytes are parsed (in ``data_received``), not when the
    app's task gets its turn on the loop: the closest this fake comes to the arrival, which
    pacing is checked from. What jitter is left (the process descheduled on a busy machine)
    is allowed for where pacing is checked (tests/e2e/test_scale_out.py)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["state"][ARRIVED] = (time.monotonic(), time.time())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        FakeGraphServer(),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        http=_DatedOnArrival,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
