"""Real processes on loopback: the router (``wa-router serve``) and the fake Graph API, and the
traffic the process tests drive them with (signed inbound webhooks, numbered senders and
customers)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import main as cli_main
from tests.bench import meta

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
APP_SECRET = "process-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


@dataclass
class FakeGraphProcess:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.url + "/_requests", timeout=5).json())

    def script(
        self,
        answers: list[Any] | None = None,
        delay: float | tuple[float, float] | None = None,
        **command: Any,
    ) -> None:
        """Change the fake's script (tests/fake_graph_server.py lists the keys of
        ``command``: ``by_to``, ``by_sender``, ``sender_default``, ``default``, ``mix``,
        ``seed``, ``reset``)."""
        command["answers"] = answers or []
        if delay is not None:
            command["delay"] = delay
        httpx.post(self.url + "/_script", json=command, timeout=5).raise_for_status()


@contextmanager
def fake_graph() -> Iterator[FakeGraphProcess]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_graph_server", "--port", str(port)], cwd=ROOT
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/_requests")
        yield FakeGraphProcess(port=port, process=process)
    finally:
        process.kill()
        process.wait(timeout=10)


@dataclass
class RouterProcess:
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "wa-router"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return done.stdout.decode()

    def key(self, scopes: str = "messages:send,messages:read,templates:send") -> dict[str, str]:
        created = json.loads(
            self.cli("keys", "create", "--client", "crm", "--scopes", scopes, "--json")
        )
        return {"Authorization": f"Bearer {created['key']}"}

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "wa-router"), "serve", "--port", str(self.port)],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_http(self.url + "/healthz")

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            worker = subprocess.Popen(
                [str(BIN / "wa-router"), "worker", *args],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(worker)
        return worker

    def kill_9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        for process in [self.process, *self.workers]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


@contextmanager
def router_process(tmp_path: Path, graph: FakeGraphProcess) -> Iterator[RouterProcess]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WA_ROUTER_")}
    env.update(
        WA_ROUTER_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'router.db'}",
        WA_ROUTER_ACCESS_TOKEN="process-token",
        WA_ROUTER_APP_SECRET=APP_SECRET,
        WA_ROUTER_GRAPH_API_URL=graph.url,
        WA_ROUTER_LOG_FORMAT="json",
        WA_ROUTER_LEASE_SECONDS="5",  # a killed server's leases expire quickly
    )
    router = RouterProcess(port=free_port(), env=env, log=tmp_path / "router.log")
    try:
        yield router
    finally:
        router.stop()


def kill_9(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def run_cli(env: Mapping[str, str], *args: str) -> str:
    """``wa-router …`` run in this process (same code path, no 1 s interpreter start each) with
    the ``WA_ROUTER_*`` variables of ``env``; returns what it printed."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        for name in [n for n in os.environ if n.startswith("WA_ROUTER_")]:
            patch.delenv(name)
        for name, value in env.items():
            if name.startswith("WA_ROUTER_"):
                patch.setenv(name, value)
        assert cli_main(list(args)) == 0
    return out.getvalue()


# --- traffic ---------------------------------------------------------------------------------


def sender_ids(count: int) -> list[str]:
    return [f"10654035224{n:04d}" for n in range(count)]


def contacts(count: int, sender_no: int = 0) -> list[str]:
    return [f"1415{sender_no:03d}{n:04d}" for n in range(count)]


def open_windows(url: str, sender: str, wa_ids: list[str]) -> None:
    """One signed inbound webhook to the router at ``url`` for ``sender``, carrying one message
    from each customer."""
    hook = meta.signed(meta.inbound_batch(sender, wa_ids), APP_SECRET)
    response = httpx.post(url + hook.path, content=hook.body, headers=hook.headers, timeout=30)
    assert response.status_code == 200
