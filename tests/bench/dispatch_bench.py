"""The dispatch side: one ``wa-router worker`` process sending a preloaded queue to the fast fake
Graph API (tests/bench/fake_graph.py), counted from the fake's arrival times; the raw httpx
ceiling against the same fake; and pacing accuracy at ``max_mps = 80``.

Every layout gets a fresh database: senders, contacts with an open window, and queued text
messages, one per contact (so neither the per-conversation order nor Meta's pair rate holds a
message back: what is measured is the sender pace and the dispatcher itself)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.bench import data
from tests.bench.knobs import Knobs
from tests.bench.load import RESULT_PREFIX, ROOT
from tests.bench.procs import Processes, arrivals, reset_fake, router_env
from tests.bench.report import DISPATCH_RATE, DISPATCH_VS_HTTPX, PACING_MAX, PACING_MEAN, Figure

FreshDatabase = Callable[[], AbstractContextManager[str]]
SENDER_BASE = 106540352240000
WA_BASE = 4915400000000
WARM_UP_SECONDS = 1.0
#: (transport, clients, requests in flight): one AsyncClient on httpx's own transport at
#: several depths, DESIGN.md's layout of many clients with a few requests in flight each, and
#: the dispatcher's own transport (httpx over aiohttp's pool, adapters/cloud_api/transport.py).
CEILING_LAYOUTS = (
    ("httpx", 1, 16),
    ("httpx", 1, 256),
    ("httpx", 64, 256),
    ("aiohttp", 1, 256),
    ("aiohttp", 2, 512),
)
#: The dispatcher's sliding pace window (app/services/dispatch.py PACE_WINDOW_SECONDS): 1,000
#: sends per 1.005 s is the most a 1,000-mps layout can show.
PACE_WINDOW_SECONDS = 1.005


@dataclass(frozen=True)
class Ceiling:
    delay_ms: int
    rate: float
    all: dict[tuple[str, int, int], float]


def httpx_ceilings(fake_url: str, knobs: Knobs) -> dict[int, Ceiling]:
    """The best of the httpx layouts, for each delay of the fake."""
    ceilings = {}
    for delay_ms in (100, 0):
        reset_fake(fake_url, delay_ms)
        rates = {}
        for transport, clients, concurrency in CEILING_LAYOUTS:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.httpx_ceiling",
                    fake_url,
                    "--clients",
                    str(clients),
                    "--concurrency",
                    str(concurrency),
                    "--seconds",
                    str(knobs.ceiling_seconds),
                    "--transport",
                    transport,
                ],
                cwd=ROOT,
                capture_output=True,
                timeout=knobs.ceiling_seconds + 60,
                check=True,
            )
            line = next(x for x in done.stdout.decode().splitlines() if x.startswith(RESULT_PREFIX))
            result = json.loads(line.removeprefix(RESULT_PREFIX))
            rates[transport, clients, concurrency] = result["requests"] / result["seconds"]
        ceilings[delay_ms] = Ceiling(delay_ms, max(rates.values()), rates)
    return ceilings


def ceiling_figures(ceilings: dict[int, Ceiling]) -> list[Figure]:
    return [
        Figure(
            "httpx",
            f"raw httpx ceiling, fake at {c.delay_ms} ms",
            value=c.rate,
            unit="req/s",
            note="best of: "
            + ", ".join(
                f"{transport}, {'1 client' if clients == 1 else f'{clients} clients'}, "
                f"{n} in flight: {rate:,.0f}/s"
                for (transport, clients, n), rate in c.all.items()
            ),
        )
        for c in ceilings.values()
    ]


def _wait_for_arrivals(fake_url: str, procs: Processes, pid: int, seconds: float) -> None:
    """Until ``seconds`` after the first send reached the fake (bounded; the worker must
    live)."""
    deadline = time.monotonic() + 60
    first = None
    while first is None:
        if time.monotonic() > deadline or not procs.alive(pid):
            raise RuntimeError(f"the worker sent nothing:\n{procs.log_tail(pid)}")
        first = httpx.get(f"{fake_url}/_count", timeout=10).json()["first"]
        time.sleep(0.1)
    time.sleep(max(0.0, first + seconds - time.monotonic()))


def run_worker(
    name: str,
    fresh: FreshDatabase,
    procs: Processes,
    fake_url: str,
    *,
    senders: int,
    max_mps: int,
    delay_ms: int,
    count: int,
    seconds: float,
) -> list[tuple[float, str]]:
    """Arrivals at the fake, sorted, during ``seconds`` from the first one."""
    with fresh() as url:
        data.prepare(url, {str(SENDER_BASE + i): max_mps for i in range(senders)}, key=False)
        rows = data.Rows("msg_00D", SENDER_BASE, senders, WA_BASE, contacts=count)
        data.contacts(url, rows, count=count)
        data.messages(url, rows, count=count, client_id="cli_bench", status="queued")
        reset_fake(fake_url, delay_ms)
        pid = procs.worker(name, router_env(url, fake_url))
        try:
            _wait_for_arrivals(fake_url, procs, pid, seconds)
            return sorted(arrivals(fake_url))
        finally:
            procs.stop(pid)


def highest_in_one_second(times: list[float]) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


#: The layouts of the issue, (senders, max_mps): Meta's top tier from one number, and spread.
LAYOUTS = ((1, 1000), (20, 50))
#: A layout whose pace cap (4,975/s) is above any ceiling measured here: what the dispatcher
#: itself can do, against the raw ceiling as it is.
CAPACITY_LAYOUT = (20, 250)


def measure(
    backend: str,
    fresh: FreshDatabase,
    procs: Processes,
    fake_url: str,
    ceilings: dict[int, Ceiling],
    knobs: Knobs,
) -> list[Figure]:
    figures = []
    for delay_ms in (100, 0):
        for senders, max_mps in (*LAYOUTS, CAPACITY_LAYOUT):
            figures.append(
                _dispatch(
                    backend,
                    fresh,
                    procs,
                    fake_url,
                    ceilings[delay_ms],
                    knobs,
                    senders=senders,
                    max_mps=max_mps,
                )
            )
    figures.extend(_pacing(backend, fresh, procs, fake_url, knobs))
    return figures


def _dispatch(
    backend: str,
    fresh: FreshDatabase,
    procs: Processes,
    fake_url: str,
    ceiling: Ceiling,
    knobs: Knobs,
    *,
    senders: int,
    max_mps: int,
) -> Figure:
    """One layout. The ratio divides by the raw ceiling. A layout of the issue is checked
    against what its pace allows when that is below the ceiling: its senders may not send
    faster, so on a machine whose ceiling is above 1,000/0.7 = 1,429/s no dispatcher could meet
    0.7 x the ceiling there. The capacity layout is checked against the ceiling itself."""
    window = WARM_UP_SECONDS + knobs.seconds
    cap = senders * max_mps / PACE_WINDOW_SECONDS
    capacity = (senders, max_mps) == CAPACITY_LAYOUT
    got = run_worker(
        f"worker-{backend.lower()}-{ceiling.delay_ms}ms-{senders}x{max_mps}",
        fresh,
        procs,
        fake_url,
        senders=senders,
        max_mps=max_mps,
        delay_ms=ceiling.delay_ms,
        count=int((min(cap, 2.5 * ceiling.rate) if ceiling.rate else cap) * (window + 2)),
        seconds=window,
    )
    t0 = got[0][0] + WARM_UP_SECONDS
    counted = [t for t, _ in got if t0 <= t < t0 + knobs.seconds]
    rate = len(counted) / knobs.seconds
    figure = Figure(
        backend,
        f"dispatch{' capacity' * capacity}, fake at {ceiling.delay_ms} ms, {senders} "
        f"sender{'s' * (senders > 1)} x max_mps {max_mps}",
        value=rate,
        unit="msg/s",
        ratio=rate / ceiling.rate if ceiling.rate else None,
    )
    per_sender = max(
        highest_in_one_second([t for t, s in got if s == sender]) for sender in {s for _, s in got}
    )
    figure.note = f"pace cap {cap:,.0f}/s; busiest sender's highest 1-s count {per_sender}"
    if ceiling.delay_ms == 100 and not capacity:
        figure.check(f"≥ {DISPATCH_RATE:,.0f} msg/s", rate >= DISPATCH_RATE)
    if ceiling.rate:
        if capacity or cap >= ceiling.rate:
            figure.check(f"≥ {DISPATCH_VS_HTTPX} x httpx", rate >= DISPATCH_VS_HTTPX * ceiling.rate)
        else:
            figure.check(
                f"≥ {DISPATCH_VS_HTTPX} x pace cap (below httpx)",
                rate >= DISPATCH_VS_HTTPX * cap,
            )
    return figure


def _pacing(
    backend: str, fresh: FreshDatabase, procs: Processes, fake_url: str, knobs: Knobs
) -> list[Figure]:
    got = run_worker(
        f"worker-{backend.lower()}-pacing",
        fresh,
        procs,
        fake_url,
        senders=1,
        max_mps=80,
        delay_ms=100,
        count=int(80 * (knobs.pacing_seconds + 4)),
        seconds=knobs.pacing_seconds,
    )
    times = [t for t, _ in got]
    mean = sum(1 for t in times if t < times[0] + knobs.pacing_seconds) / knobs.pacing_seconds
    highest = highest_in_one_second(times)
    note = (
        f"fake at 100 ms, {knobs.pacing_seconds:.0f} s; arrival times at the fake, so loopback "
        "and scheduling jitter count"
    )
    return [
        Figure(backend, "pacing at max_mps 80: mean", value=mean, unit="msg/s", note=note).check(
            f"≥ {PACING_MEAN:.0f}/s", mean >= PACING_MEAN
        ),
        Figure(
            backend,
            "pacing at max_mps 80: highest 1-s count",
            value=highest,
            unit="msg",
            note=note,
        ).check(f"≤ {PACING_MAX}", highest <= PACING_MAX),
    ]


def sqlite_databases(workdir: Path) -> FreshDatabase:
    counter = iter(range(1_000_000))

    class _Fresh(AbstractContextManager[str]):
        def __enter__(self) -> str:
            return f"sqlite+aiosqlite:///{workdir / f'dispatch-{next(counter)}.db'}"

        def __exit__(self, *_: object) -> None:
            return None

    return _Fresh
