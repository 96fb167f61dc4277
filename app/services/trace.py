"""The support timeline of one correlation id: the request and its window decision, every Cloud
API attempt and every status report, as plain data shared by the HTTP route and the CLI.

What is shown is chosen field by field per kind of event (never the stored payload or a raw
Meta error), and every string is clipped to 80 characters: no secrets, no message text beyond
the request's 80-character summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.db import listing
from adapters.db import messages as message_repo
from adapters.db.engine import Database
from app.ids import CORRELATION_ID

#: A correlation id can be reused by a client for many requests; one trace shows this many.
MAX_TRACE_EVENTS = 1000
MAX_TEXT = 80

_REQUEST_FIELDS = (
    "route",
    "status_code",
    "code",
    "client_id",
    "client_name",
    "key_id",
    "sender_id",
    "to",
    "kind",
    "summary",
    "idempotency_key",
    "replayed",
)
_WINDOW_FIELDS = ("open", "last_inbound_at", "window_closed_at")
_ATTEMPT_FIELDS = (
    "outcome",
    "http_status",
    "code",
    "title",
    "fbtrace_id",
    "latency_ms",
    "wamid",
    "maybe_sent",
    "next_attempt_at",
)
_STATUS_FIELDS = ("source", "wamid", "code")
_ERROR_FIELDS = ("code", "title")


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceEvent:
    at: datetime
    kind: str
    message_id: str | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    correlation_id: str
    events: list[TraceEvent]
    truncated: bool


def clip(value: Any) -> Any:
    """Strings longer than 80 characters are cut (with an ellipsis); other values pass."""
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[: MAX_TEXT - 1] + "…"
    return value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _pick(source: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: clip(source[f]) for f in fields if f in source and _scalar(source[f])}


def _request_detail(event: listing.StoredEvent) -> dict[str, Any]:
    source = dict(event.detail)
    if event.client_name is not None:
        source["client_name"] = event.client_name
    if event.sender_id is not None:  # a refused request stored no message, so no sender or to
        source["sender_id"] = event.sender_id
        source["to"] = event.wa_id
    detail = _pick(source, _REQUEST_FIELDS)
    window = event.detail.get("window")
    # Templates are never window-checked: their request carries no window decision (null).
    detail["window"] = _pick(window, _WINDOW_FIELDS) if isinstance(window, Mapping) else None
    return detail


def _status_detail(event: listing.StoredEvent) -> dict[str, Any]:
    detail: dict[str, Any] = {"status": event.status, "applied": bool(event.applied)}
    detail.update(_pick(event.detail, _STATUS_FIELDS))
    error = event.detail.get("error")
    if isinstance(error, Mapping):
        detail["error"] = _pick(error, _ERROR_FIELDS)
    return detail


def _detail(event: listing.StoredEvent) -> dict[str, Any]:
    if event.kind == message_repo.EventKind.REQUEST:
        return _request_detail(event)
    if event.kind == message_repo.EventKind.ATTEMPT:
        return _pick(event.detail, _ATTEMPT_FIELDS)
    if event.kind == message_repo.EventKind.STATUS:
        return _status_detail(event)
    # A kind this code does not know yet: its scalar fields, clipped.
    return {k: clip(v) for k, v in event.detail.items() if _scalar(v)}


def _order(event: listing.StoredEvent) -> tuple[datetime, int]:
    """Time order at whole seconds, then the order the router recorded the events: Meta's
    webhook timestamps are whole seconds, so a `delivered` report stamped 12:00:00 must not
    sort before the attempt that got the wamid at 12:00:00.4."""
    return event.at.replace(microsecond=0), event.id


async def correlation_trace(db: Database, correlation_id: str) -> Trace | None:
    """The timeline of ``correlation_id``, or None when nothing was recorded under it."""
    if not CORRELATION_ID.fullmatch(correlation_id):
        return None  # never adopted as a correlation id, so nothing can be recorded under it
    async with db.read() as conn:
        stored = await listing.events_of_correlation(
            conn, correlation_id, limit=MAX_TRACE_EVENTS + 1
        )
    if not stored:
        return None
    shown = sorted(stored[:MAX_TRACE_EVENTS], key=_order)
    return Trace(
        correlation_id=correlation_id,
        events=[
            TraceEvent(at=e.at, kind=e.kind, message_id=e.message_id, detail=_detail(e))
            for e in shown
        ],
        truncated=len(stored) > MAX_TRACE_EVENTS,
    )


# --- the CLI's table -------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(event: TraceEvent) -> str:
    d = event.detail
    parts: list[str] = []
    if event.kind == message_repo.EventKind.REQUEST:
        parts.append(f"{d.get('route', '?')} -> {d.get('status_code', '?')}")
        if d.get("code"):
            parts.append(str(d["code"]))
        parts.append(f"client={d.get('client_name') or d.get('client_id')}")
        parts.append(f"key={d.get('key_id')}")
        window = d.get("window")
        if isinstance(window, Mapping):
            state = "open" if window.get("open") else "closed"
            last = window.get("last_inbound_at") or "never"
            parts.append(f"window={state} last_inbound_at={last}")
        if d.get("summary"):
            parts.append(f'"{d["summary"]}"')
    elif event.kind == message_repo.EventKind.ATTEMPT:
        parts.append(str(d.get("outcome", "?")))
        parts.append(f"http={d.get('http_status')}")
        if d.get("code") is not None:
            parts.append(f"code={d['code']}")
        if d.get("latency_ms") is not None:
            parts.append(f"latency={d['latency_ms']}ms")
        for name in ("fbtrace_id", "wamid"):
            if d.get(name):
                parts.append(f"{name}={d[name]}")
    elif event.kind == message_repo.EventKind.STATUS:
        parts.append(str(d.get("status")))
        parts.append(f"({d.get('source', '?')}{'' if d.get('applied') else ', late: not applied'})")
        error = d.get("error")
        if isinstance(error, Mapping):
            parts.append(f"error={error.get('code')} {error.get('title', '')}".rstrip())
        elif d.get("code") is not None:
            parts.append(f"code={d['code']}")
    else:
        parts.extend(f"{k}={v}" for k, v in d.items())
    return " ".join(parts)


def table(trace: Trace) -> list[str]:
    """One line per event: time, kind, message id and the most useful detail."""
    lines = [f"{'AT':<24}  {'KIND':<7}  {'MESSAGE':<30}  DETAIL"]
    for event in trace.events:
        lines.append(
            f"{_iso(event.at):<24}  {event.kind:<7}  {event.message_id or '-':<30}  "
            f"{_summary(event)}"
        )
    if trace.truncated:
        lines.append(f"(only the first {MAX_TRACE_EVENTS} events are shown)")
    return lines
