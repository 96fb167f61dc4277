"""The HTTP side, in one ``wa-router serve`` process (``WA_ROUTER_WORKER=off``, so nothing but
the requests under test runs in it): the bare route, accept, status polling, webhook ingestion,
then accept and polling again after a large preload (growth), and the server's RSS.

The bare route is measured twice before the preload and twice after it; every ratio divides by
the best of those runs. The bare route does not touch the database, so the spread of its runs is
the machine's noise, and a common ceiling keeps that noise out of the growth comparison."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec

from tests.bench import data, meta
from tests.bench.knobs import Knobs
from tests.bench.load import LoadResult, Request, run_load
from tests.bench.procs import APP_SECRET, Processes, router_env, rss_mb, wait_idle
from tests.bench.report import (
    ACCEPT_P99_MS,
    ACCEPT_RATIO,
    GROWTH_LOSS,
    RSS_MB,
    WEBHOOK_EVENTS,
    Figure,
    from_load,
)

SENDER = "106540352242922"
#: Contacts whose window the inbound batch opens; accept cycles through them.
ACCEPT_CONTACTS = 1000
ACCEPT_WA_BASE = 4915100000000
POLLED_MESSAGES = 200
STATUSES_PER_BATCH = 50
#: Messages with a wamid, whose sent/delivered/read statuses the webhook load posts: enough
#: that the load never runs out of fresh statuses (redeliveries would flatter the figure).
WEBHOOK_MESSAGES_PER_SECOND = 10_000  # 30,000 status events a second, more than it takes


@dataclass
class Runs:
    """The load results of one server process."""

    bare: list[LoadResult] = field(default_factory=list)
    accept: LoadResult | None = None
    accept_with_key: LoadResult | None = None
    poll: LoadResult | None = None
    poll_304: LoadResult | None = None
    webhook: LoadResult | None = None
    webhook_batches: int = 0
    #: Accept and poll after the preload, and what was preloaded.
    growth: tuple[LoadResult, LoadResult] | None = None
    growth_note: str = ""
    rss_mb: float | None = None


@dataclass
class Server:
    backend: str
    base_url: str
    pid: int
    procs: Processes
    workdir: Path
    knobs: Knobs

    def load(self, requests: list[Request], *, unique_keys: bool = False) -> LoadResult:
        wait_idle(self.pid)
        result = run_load(
            self.base_url,
            requests,
            workdir=self.workdir,
            connections=self.knobs.connections,
            seconds=self.knobs.seconds,
            unique_keys=unique_keys,
        )
        if not self.procs.alive(self.pid):
            raise RuntimeError(f"the router died:\n{self.procs.log_tail(self.pid)}")
        return result


def measure(backend: str, url: str, procs: Processes, workdir: Path, knobs: Knobs) -> list[Figure]:
    secret = data.prepare(url, {SENDER: 80})
    client_id = data.client_id(url)
    env = router_env(
        url,
        "http://127.0.0.1:9",  # never called: no dispatcher runs in this process
        WA_ROUTER_WORKER="off",
        WA_ROUTER_BENCH_ROUTES="1",
    )
    pid, base_url = procs.router(f"router-{backend.lower()}", env)
    try:
        server = Server(backend, base_url, pid, procs, workdir, knobs)
        runs = _run(server, url, secret or "", client_id)
    finally:
        procs.stop(pid)
    return figures(backend, runs, knobs)


def _run(server: Server, url: str, secret: str, client_id: str) -> Runs:
    knobs, runs = server.knobs, Runs()
    auth = {"Authorization": f"Bearer {secret}"}
    wa_ids = [str(ACCEPT_WA_BASE + i) for i in range(ACCEPT_CONTACTS)]
    hook = meta.signed(meta.inbound_batch(SENDER, wa_ids), APP_SECRET)
    opened = httpx.post(
        server.base_url + meta.WEBHOOK_PATH, content=hook.body, headers=hook.headers, timeout=60
    )
    opened.raise_for_status()

    bare = [
        Request("POST", "/bench/bare", body=msgspec.json.encode({"to": "+" + wa, "text": "hi"}))
        for wa in wa_ids
    ]
    accept = [
        Request(
            "POST",
            "/v1/whatsapp/messages",
            auth,
            msgspec.json.encode(
                {"to": "+" + wa, "sender_id": SENDER, "text": "Your order #123 has shipped"}
            ),
        )
        for wa in wa_ids
    ]
    runs.bare.append(server.load(bare))
    runs.accept = server.load(accept)
    runs.accept_with_key = server.load(accept, unique_keys=True)

    polled = data.newest_message_ids(url, POLLED_MESSAGES)
    poll = [Request("GET", f"/v1/whatsapp/messages/{m}", auth) for m in polled]
    runs.poll = server.load(poll)
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as http:
        etags = [http.get(f"/v1/whatsapp/messages/{m}").headers["etag"] for m in polled]
    runs.poll_304 = server.load(
        [
            Request("GET", f"/v1/whatsapp/messages/{m}", {**auth, "If-None-Match": etag})
            for m, etag in zip(polled, etags, strict=True)
        ]
    )

    hooked = int(WEBHOOK_MESSAGES_PER_SECOND * knobs.seconds)
    rows = data.Rows("msg_00W", int(SENDER), 1, 4915200000000, contacts=hooked)
    data.messages(url, rows, count=hooked, client_id=client_id, status="accepted", wamids=True)
    batches = meta.status_batches(
        SENDER, [(rows.message_id(n), rows.wa_id(n)) for n in range(hooked)]
    )
    runs.webhook = server.load([meta.signed(b, APP_SECRET) for b in batches])
    runs.webhook_batches = len(batches)
    runs.bare.append(server.load(bare))

    if "growth" in knobs.sections and knobs.growth_messages > 0:
        started = time.monotonic()
        rows = data.Rows(
            "msg_00G", int(SENDER), 1, 4915300000000, contacts=max(1, knobs.growth_contacts)
        )
        data.contacts(url, rows, count=knobs.growth_contacts)
        data.messages(
            url,
            rows,
            count=knobs.growth_messages,
            client_id=client_id,
            status="accepted",
            events=True,
        )
        data.settle(url)
        runs.growth_note = (
            f"{knobs.growth_messages:,} messages (2 events each) and {knobs.growth_contacts:,} "
            f"contacts preloaded{' (then VACUUM ANALYZE)' if server.backend != 'SQLite' else ''}"
            f" in {time.monotonic() - started:.0f} s"
        )
        runs.bare.append(server.load(bare))
        runs.growth = (server.load(accept), server.load(poll))
        runs.bare.append(server.load(bare))
    runs.rss_mb = rss_mb(server.pid)
    return runs


def _ratio(figure: Figure, ceiling: float) -> Figure:
    if figure.value is not None and ceiling:
        figure.ratio = figure.value / ceiling
    return figure


def _accept_checks(figure: Figure) -> Figure:
    if figure.ratio is not None:
        figure.check(f"≥ {ACCEPT_RATIO} x bare (aim 0.7)", figure.ratio >= ACCEPT_RATIO)
    if figure.p99_ms is not None:
        figure.check(f"p99 ≤ {ACCEPT_P99_MS:.0f} ms", figure.p99_ms <= ACCEPT_P99_MS)
    return figure


def _growth_checks(figure: Figure, base: Figure, preload: str) -> Figure:
    figure.note = preload
    if figure.ratio is not None and base.ratio and figure.invalid is None:
        loss = 1 - figure.ratio / base.ratio
        change = f"loss {loss:.0%}" if loss >= 0 else f"gain {-loss:.0%}"
        figure.note += f"; ratio {base.ratio:.2f} before → {figure.ratio:.2f}: {change}"
        figure.check(f"loss ≤ {GROWTH_LOSS:.0%}", loss <= GROWTH_LOSS)
    return figure


def figures(backend: str, runs: Runs, knobs: Knobs) -> list[Figure]:
    ceiling = max(runs.bare, key=lambda r: r.rate)

    def figure(name: str, result: LoadResult | None, expected: int) -> Figure:
        assert result is not None
        return _ratio(
            from_load(backend, name, result, expected=expected, unit="req/s"), ceiling.rate
        )

    bare = figure("bare route POST /bench/bare", ceiling, 202)
    bare.note = "best of " + ", ".join(f"{r.rate:,.0f}" for r in runs.bare[:2])
    if len(runs.bare) > 2:
        bare.note += "; after the preload " + ", ".join(f"{r.rate:,.0f}" for r in runs.bare[2:])
    accept = _accept_checks(figure("accept POST /v1/whatsapp/messages", runs.accept, 202))
    poll = figure("poll GET /v1/whatsapp/messages/{id}", runs.poll, 200)
    assert runs.webhook is not None
    webhook = from_load(
        backend,
        "webhook status events, batches of 50",
        runs.webhook,
        expected=200,
        unit="events/s",
    )
    webhook.note = "latency per batch"
    if webhook.value is not None:
        webhook.value *= STATUSES_PER_BATCH
        webhook.check(f"≥ {WEBHOOK_EVENTS:,.0f} events/s", webhook.value >= WEBHOOK_EVENTS)
    if runs.webhook.requests > runs.webhook_batches:
        webhook.note += "; ran out of fresh batches: the rest were redeliveries"
    result = [
        bare,
        accept,
        _accept_checks(figure("accept with a new Idempotency-Key", runs.accept_with_key, 202)),
        poll,
        figure("poll with If-None-Match → 304", runs.poll_304, 304),
        webhook,
    ]
    names = ("growth: accept", "growth: poll")
    if runs.growth is None:
        why = "BENCH_GROWTH_MESSAGES=0" if knobs.growth_messages <= 0 else "not in BENCH_ONLY"
        result += [Figure(backend, n, skipped=why) for n in names]
    else:
        result += [
            _growth_checks(figure(names[0], runs.growth[0], 202), accept, runs.growth_note),
            _growth_checks(figure(names[1], runs.growth[1], 200), poll, runs.growth_note),
        ]
    result.append(
        Figure(backend, "server RSS after these runs", value=runs.rss_mb, unit="MB").check(
            f"≤ {RSS_MB:.0f} MB", runs.rss_mb is not None and runs.rss_mb <= RSS_MB
        )
    )
    return result
