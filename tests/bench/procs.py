"""The processes of a benchmark run (router, worker, fake Graph API), all on loopback, each
logging to its own file, and every one stopped when the run ends, even on failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.processes import BIN, ROOT, free_port, wait_http

APP_SECRET = "bench-app-secret"
ACCESS_TOKEN = "bench-token"
#: High enough that the per-client budgets never refuse a benchmark request, while the
#: limiter still does its work on every request (0 would switch it off).
UNLIMITED_RATE = "10000000"


def router_env(database_url: str, graph_url: str, **extra: str) -> dict[str, str]:
    """Production settings (a real token, so no sandbox; JSON logs) for the benchmarks."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WA_ROUTER_")}
    env.update(
        WA_ROUTER_DATABASE_URL=database_url,
        WA_ROUTER_ACCESS_TOKEN=ACCESS_TOKEN,
        WA_ROUTER_APP_SECRET=APP_SECRET,
        WA_ROUTER_GRAPH_API_URL=graph_url,
        WA_ROUTER_LOG_FORMAT="json",
        WA_ROUTER_SEND_RATE_PER_MINUTE=UNLIMITED_RATE,
        WA_ROUTER_READ_RATE_PER_MINUTE=UNLIMITED_RATE,
    )
    env.update(extra)
    return env


class Processes:
    """Started processes, stopped (TERM, then KILL) by :meth:`close` or on leaving a ``with``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> int:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        self.running[process.pid] = (name, process)
        return process.pid

    def alive(self, pid: int) -> bool:
        return pid in self.running and self.running[pid][1].poll() is None

    def log_tail(self, pid: int, lines: int = 20) -> str:
        name = self.running[pid][0] if pid in self.running else "?"
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, pid: int, timeout: float = 20.0) -> None:
        _, process = self.running.pop(pid)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def close(self) -> None:
        for pid in list(self.running):
            self.stop(pid)

    # --- the three kinds of process ----------------------------------------------------------

    def router(self, name: str, env: dict[str, str]) -> tuple[int, str]:
        """``wa-router serve`` (uvicorn; uvloop and httptools when installed): (pid, URL)."""
        port = free_port()
        pid = self.start(name, [str(BIN / "wa-router"), "serve", "--port", str(port)], env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/healthz", timeout=60)
        except TimeoutError:
            raise RuntimeError(f"{name} did not start:\n{self.log_tail(pid)}") from None
        return pid, url

    def worker(self, name: str, env: dict[str, str]) -> int:
        return self.start(name, [str(BIN / "wa-router"), "worker"], env)

    def fake_graph(self) -> tuple[int, str]:
        port = free_port()
        pid = self.start(
            "fake-graph", [sys.executable, "-m", "tests.bench.fake_graph", "--port", str(port)]
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/_arrivals", timeout=30)
        return pid, url


def reset_fake(url: str, delay_ms: int) -> None:
    httpx.post(f"{url}/_reset?delay_ms={delay_ms}", timeout=10).raise_for_status()


def arrivals(url: str) -> list[tuple[float, str]]:
    return [(float(t), str(s)) for t, s in httpx.get(f"{url}/_arrivals", timeout=30).json()]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a live process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, *, timeout: float = 60.0) -> float:
    """Until the process has stopped working: a load generator that stops leaves the requests it
    sent last still being served (a queue of webhook batches takes seconds), and they must not
    run into the next measurement. Returns how long it waited."""
    started = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        if now - before <= 0.025:  # under 10 % of a core
            break
        before = now
    return time.monotonic() - started


def rss_mb(pid: int) -> float | None:
    """VmRSS of a live process, in MB (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
