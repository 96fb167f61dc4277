"""What the fault tests (test_faults.py) check, over the fake Graph API's record of arrivals
and the router's SQLite file."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.processes import FakeGraphProcess

#: Codes that end a message, and the one that also closes its conversation's window.
PERMANENT = {131026, 131047}
RE_ENGAGEMENT = 131047
Arrivals = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Row:
    id: str
    sender_id: str
    wa_id: str
    status: str
    attempts: int
    error_code: str | None
    error_source: str | None
    lease_expires_at: str | None


def rows(db_path: Path) -> dict[str, Row]:
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        found = db.execute(
            "SELECT id, sender_id, wa_id, status, attempts, error_code, error_source, "
            "lease_expires_at FROM messages"
        ).fetchall()
    return {r[0]: Row(*r) for r in found}


def count(db_path: Path, where: str) -> int:
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        return int(db.execute(f"SELECT count(*) FROM messages WHERE {where}").fetchone()[0])  # noqa: S608


def leases_beyond(db_path: Path, lease_seconds: float, slack: float = 1.0) -> int:
    """Messages leased further ahead than a lease from now (a lease that would never end)."""
    limit = datetime.now(UTC) + timedelta(seconds=lease_seconds + slack)
    naive = limit.strftime("%Y-%m-%d %H:%M:%S.%f")  # how SQLAlchemy stores it on SQLite
    return count(db_path, f"lease_expires_at IS NOT NULL AND lease_expires_at > '{naive}'")


def wait_for(condition: Callable[[], bool], timeout: float, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def arrivals(graph: FakeGraphProcess) -> Arrivals:
    """Our message id (biz_opaque_callback_data) → the fake's requests for it, in arrival
    order."""
    by_id: Arrivals = defaultdict(list)
    for request in sorted(graph.requests(), key=lambda r: r["at"]):
        by_id[request["callback"]].append(request)
    return by_id


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most arrivals in any closed window [t, t + window]."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


def max_rates(graph_requests: list[dict[str, Any]], window: float = 1.0) -> dict[str, int]:
    """Per sender, the most arrivals in any closed window of ``window`` seconds."""
    per_sender: dict[str, list[float]] = defaultdict(list)
    for request in graph_requests:
        per_sender[request["phone_number_id"]].append(request["at"])
    return {sender: max_in_window(times, window) for sender, times in per_sender.items()}


def conversations(db: dict[str, Row]) -> dict[tuple[str, str], list[str]]:
    """(sender, contact) → its message ids in acceptance order."""
    pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in db.values():
        pairs[(row.sender_id, row.wa_id)].append(row.id)
    return {pair: sorted(ids) for pair, ids in pairs.items()}


def assert_in_order(db: dict[str, Row], seen: Arrivals) -> int:
    """Per (sender, contact): every request for a message came after every request for the
    pair's earlier messages (so first arrivals follow acceptance order, and the next one waited
    for the previous one's answer). Returns the number of pairs checked."""
    pairs = conversations(db)
    for pair, ids in pairs.items():
        sent = [seen[i] for i in ids if seen.get(i)]
        for earlier, later in itertools.pairwise(sent):
            assert earlier[-1]["at"] < later[0]["at"], (
                f"{pair}: {later[0]['callback']} went out before {earlier[-1]['callback']} "
                "was answered"
            )
    return len(pairs)


def duplicates(seen: Arrivals) -> int:
    """Messages the fake took (answered ok, or would have after a hang) more than once."""
    return sum(1 for reqs in seen.values() if sum(r["answer"] in ("ok", "hang") for r in reqs) > 1)


def report(name: str, **counts: object) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in counts.items()))


def check_outcomes(db: dict[str, Row], seen: Arrivals) -> Counter[str]:
    """Each message's end is the one its answers call for; returns the ends counted."""
    outcomes: Counter[str] = Counter()
    for pair_ids in conversations(db).values():
        window_closed = False
        for mid in pair_ids:
            row, answers = db[mid], [r["answer"] for r in seen.get(mid, [])]
            assert row.attempts == len(answers), (row, answers)  # each attempt reached Meta
            if row.status == "accepted":
                assert answers[-1] == "ok"
                assert "ok" not in answers[:-1]
                outcomes["accepted"] += 1
            elif row.status == "failed" and row.error_source == "cloud_api":
                code = int(row.error_code or 0)
                assert code in PERMANENT, row
                assert answers[-1].endswith(f":{code}")
                window_closed |= code == RE_ENGAGEMENT
                outcomes[f"failed {code}"] += 1
            else:
                # After Meta's 131047 the conversation's window is closed: its later
                # messages fail before they are sent.
                assert row.status == "failed", row
                assert row.error_code == "window_closed_before_send", row
                assert window_closed, row
                assert answers == []
                outcomes["failed window_closed_before_send"] += 1
    return outcomes


def check_retry_gaps(seen: Arrivals, reconcile_seconds: float) -> int:
    """A message is sent again no sooner than its fault allows: after a hang or a dropped
    connection, the reconciliation period; after 131056, the pair's 4^X s (at least 1 s)."""
    checked = 0
    for reqs in seen.values():
        for before, after in itertools.pairwise(reqs):
            gap = after["at"] - before["at"]
            if before["answer"] in ("hang", "close"):
                assert gap >= reconcile_seconds, (before, after)
                checked += 1
            elif before["answer"] == "error:400:131056":
                assert gap >= 1.0, (before, after)
                checked += 1
    return checked
