"""What a benchmark run may be told through the environment (every knob optional):

- ``BENCH_SECONDS`` (5): the length of each HTTP load and dispatch measurement;
- ``BENCH_CONNECTIONS`` (32): concurrent keep-alive connections of the HTTP loads;
- ``BENCH_PACING_SECONDS`` (10): the length of the ``max_mps = 80`` pacing measurement;
- ``BENCH_CEILING_SECONDS`` (3): each raw httpx ceiling measurement;
- ``BENCH_GROWTH_MESSAGES`` (1000000) and ``BENCH_GROWTH_CONTACTS`` (100000): the preload of
  the growth measurement; 0 messages skips it;
- ``BENCH_ONLY``: a comma-separated subset of ``http,growth,dispatch`` (default: all);
- ``BENCH_BACKENDS``: a comma-separated subset of ``sqlite,postgresql`` (default: both,
  PostgreSQL only when ``WA_ROUTER_TEST_POSTGRES_URL`` is set);
- ``BENCH_LOADGEN=python``: the Python load generator even where wrk is installed;
- ``WA_ROUTER_TEST_POSTGRES_URL``: also run everything on fresh PostgreSQL databases."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw else default


def _names(name: str, default: set[str]) -> frozenset[str]:
    raw = os.environ.get(name, "")
    return frozenset({s.strip().lower() for s in raw.split(",") if s.strip()} or default)


@dataclass(frozen=True)
class Knobs:
    seconds: float
    connections: int
    pacing_seconds: float
    ceiling_seconds: float
    growth_messages: int
    growth_contacts: int
    sections: frozenset[str]
    backends: frozenset[str]
    postgres_url: str | None

    @classmethod
    def from_env(cls) -> Knobs:
        return cls(
            seconds=_number("BENCH_SECONDS", 5),
            connections=int(_number("BENCH_CONNECTIONS", 32)),
            pacing_seconds=_number("BENCH_PACING_SECONDS", 10),
            ceiling_seconds=_number("BENCH_CEILING_SECONDS", 3),
            growth_messages=int(_number("BENCH_GROWTH_MESSAGES", 1_000_000)),
            growth_contacts=int(_number("BENCH_GROWTH_CONTACTS", 100_000)),
            sections=_names("BENCH_ONLY", {"http", "growth", "dispatch"}),
            backends=_names("BENCH_BACKENDS", {"sqlite", "postgresql"}),
            postgres_url=os.environ.get("WA_ROUTER_TEST_POSTGRES_URL") or None,
        )
