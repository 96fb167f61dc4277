"""``make bench``: every measurement of issue 5, side by side, in one run, printed as one table
with the ratios computed from that run and each target as PASS or FAIL.

Targets are printed, never asserted: only a measurement that could not be made properly (a
dead process, unexpected statuses) fails this test."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import tempfile
import time
from contextlib import AbstractContextManager
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.bench import data, dispatch_bench, http_bench
from tests.bench.knobs import Knobs
from tests.bench.load import tool_version
from tests.bench.procs import Processes
from tests.bench.report import Figure, failures, table


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores ({model}), Python {platform.python_version()}, {platform.system()}"


def server_stack() -> str:
    """What ``wa-router serve`` runs on (uvicorn picks uvloop and httptools when installed)."""
    parts = ["uvicorn " + version("uvicorn")]
    for name in ("uvloop", "httptools"):
        if importlib.util.find_spec(name) is not None:
            parts.append(f"{name} {version(name)}")
    return ", ".join(parts)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class _SqliteFile(AbstractContextManager[str]):
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}"

    def __exit__(self, *_: object) -> None:
        for leftover in self.path.parent.glob(self.path.name + "*"):
            leftover.unlink()


def run(workdir: Path, knobs: Knobs) -> list[Figure]:
    figures: list[Figure] = []
    backends: list[tuple[str, dispatch_bench.FreshDatabase]] = []
    if "sqlite" in knobs.backends:
        backends.append(("SQLite", dispatch_bench.sqlite_databases(workdir)))
    if knobs.postgres_url and "postgresql" in knobs.backends:
        postgres_url = knobs.postgres_url
        backends.append(("PostgreSQL", lambda: data.postgres_database(postgres_url)))
    with Processes(workdir / "logs") as procs:
        ceilings: dict[int, dispatch_bench.Ceiling] = {}
        fake_url = ""
        if "dispatch" in knobs.sections:
            _, fake_url = procs.fake_graph()
            ceilings = dispatch_bench.httpx_ceilings(fake_url, knobs)
            figures += dispatch_bench.ceiling_figures(ceilings)
        for backend, fresh in backends:
            if "http" in knobs.sections:
                database = (
                    _SqliteFile(workdir / "router-http.db") if backend == "SQLite" else fresh()
                )
                with database as url:
                    figures += http_bench.measure(backend, url, procs, workdir, knobs)
            if "dispatch" in knobs.sections:
                figures += dispatch_bench.measure(backend, fresh, procs, fake_url, ceilings, knobs)
    return figures


@pytest.mark.timeout(3600)
def test_bench() -> None:
    knobs = Knobs.from_env()
    started, load_before = time.monotonic(), load_average()
    # Our own directory, not pytest's tmp_path: other pytest sessions on this machine prune
    # old tmp_path directories, possibly while a long benchmark still uses its own.
    workdir = Path(tempfile.mkdtemp(prefix="wa-router-bench-"))
    (workdir / "logs").mkdir()
    try:
        figures = run(workdir, knobs)
    except BaseException:
        print(f"\nthe benchmark failed; its logs are kept in {workdir / 'logs'}")
        raise
    finally:
        for leftover in workdir.glob("*.db*"):  # the growth database alone is over a GB
            leftover.unlink()

    print()
    print(f"wa-router benchmarks — {machine()}")
    print(f"server: wa-router serve on {server_stack()}, JSON logs to a file; loopback only")
    print(
        f"load: {tool_version()}, {knobs.connections} connections, {knobs.seconds:g} s per "
        f"measurement; load average before {load_before}, after {load_average()}; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print(
        "ratio: to the bare route of the same run (HTTP rows), to the best raw httpx figure "
        "of the same run at the same delay (dispatch rows)"
    )
    print()
    print(table(figures))
    failed = failures(figures)
    print()
    print(f"{len(failed)} target(s) not met" + (":" if failed else ""))
    for line in failed:
        print(f"  FAIL {line}")
    invalid = [f"{f.backend} {f.name}: {f.invalid}" for f in figures if f.invalid]
    if invalid:
        print(f"logs kept in {workdir / 'logs'}")
    else:
        shutil.rmtree(workdir)
    assert not invalid, "measurements that could not be made properly:\n" + "\n".join(invalid)
