"""Bounded HTTP load from a separate process: wrk when it is installed (Debian: ``apt-get
install wrk``), else tests/bench/loadgen.py, a Python asyncio generator. Both cycle through the
same request file, optionally give every request its own Idempotency-Key, and report requests,
duration, p50/p99 latency and the response statuses.

``BENCH_LOADGEN=python`` forces the Python generator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULT_PREFIX = "BENCH-RESULT "


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    errors: int  # connect, read, write and timeout errors

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def unexpected(self, expected: int) -> int:
        """Responses with another status than ``expected``, plus socket errors."""
        return self.errors + sum(n for code, n in self.statuses.items() if code != expected)


def write_requests(path: Path, requests: list[Request]) -> None:
    """The request file both generators read (its format is described in load.lua)."""
    with path.open("wb") as out:
        for r in requests:
            headers = dict(r.headers)
            if r.body:
                headers.setdefault("Content-Type", "application/json")
            out.write(f"{r.method} {r.path} {len(headers)} {len(r.body)}\n".encode())
            for name, value in headers.items():
                out.write(f"{name}: {value}\n".encode())
            out.write(r.body)


def read_requests(path: Path) -> list[Request]:
    data = path.read_bytes()
    requests, at = [], 0
    while at < len(data):
        end = data.index(b"\n", at)
        method, target, count, length = data[at:end].decode().split(" ")
        at = end + 1
        headers = {}
        for _ in range(int(count)):
            end = data.index(b"\n", at)
            name, _, value = data[at:end].decode().partition(": ")
            headers[name] = value
            at = end + 1
        body = data[at : at + int(length)]
        at += int(length)
        requests.append(Request(method, target, headers, body))
    return requests


def tool() -> str:
    if os.environ.get("BENCH_LOADGEN") != "python" and shutil.which("wrk"):
        return "wrk"
    return "python"


def tool_version() -> str:
    if tool() == "wrk":
        done = subprocess.run(["wrk", "--version"], capture_output=True, timeout=10, check=False)
        return (done.stdout or done.stderr).decode().split("[", 1)[0].strip() or "wrk"
    return "tests/bench/loadgen.py (asyncio)"


def run_load(
    base_url: str,
    requests: list[Request],
    *,
    workdir: Path,
    connections: int,
    seconds: float,
    unique_keys: bool = False,
) -> LoadResult:
    """Drive ``requests`` round-robin over ``connections`` keep-alive connections for
    ``seconds``, from another process."""
    spec = workdir / "requests.txt"
    write_requests(spec, requests)
    if tool() == "wrk":
        command = [
            "wrk",
            "-t1",  # one load thread: the second core is the server's
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "load.lua"),
            base_url,
            "--",
            str(spec),
            "unique" if unique_keys else "same",
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "tests.bench.loadgen",
            base_url,
            str(spec),
            "--connections",
            str(connections),
            "--seconds",
            str(seconds),
            *(["--unique-keys"] if unique_keys else []),
        ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=seconds + 60, check=False)
    out = done.stdout.decode()
    line = next((ln for ln in out.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if done.returncode != 0 or line is None:
        error = done.stderr.decode()[-2000:]
        raise RuntimeError(f"load generator failed ({done.returncode}): {out[-2000:]} {error}")
    raw = json.loads(line.removeprefix(RESULT_PREFIX))
    return LoadResult(
        requests=int(raw["requests"]),
        seconds=float(raw["seconds"]),
        p50_ms=float(raw["p50_ms"]),
        p99_ms=float(raw["p99_ms"]),
        statuses={int(code): int(n) for code, n in raw["statuses"].items()},
        errors=int(raw["errors"]),
    )
