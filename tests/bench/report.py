"""Figures, their targets (issue 5: printed as PASS/FAIL, never asserted) and the one table."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.bench.load import LoadResult


@dataclass(frozen=True)
class Check:
    target: str
    passed: bool


@dataclass
class Figure:
    backend: str
    name: str
    value: float | None = None
    unit: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    ratio: float | None = None
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    #: Why there is no figure (the table says "skipped", it never makes one up).
    skipped: str | None = None
    #: What makes the figure unusable (unexpected statuses, no traffic).
    invalid: str | None = None

    def check(self, target: str, passed: bool) -> Figure:
        self.checks.append(Check(target, passed))
        return self


def from_load(backend: str, name: str, result: LoadResult, *, expected: int, unit: str) -> Figure:
    figure = Figure(
        backend,
        name,
        value=result.rate,
        unit=unit,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
    )
    wrong = result.unexpected(expected)
    if result.requests == 0:
        figure.invalid = "no answer at all"
    elif wrong > result.requests * 0.001:
        others = {code: n for code, n in result.statuses.items() if code != expected}
        figure.invalid = f"{wrong} unexpected answers: {others}, {result.errors} socket errors"
    return figure


# --- the targets -------------------------------------------------------------------------------

ACCEPT_RATIO = 0.5
ACCEPT_P99_MS = 20.0
DISPATCH_RATE = 1000.0
DISPATCH_VS_HTTPX = 0.7
PACING_MEAN = 76.0
PACING_MAX = 80
WEBHOOK_EVENTS = 5000.0
GROWTH_LOSS = 0.10
RSS_MB = 250.0


# --- the table ---------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return ""
    return f"{value:,.{digits}f}"


def _result(figure: Figure) -> str:
    if figure.skipped is not None:
        return "skipped"
    if figure.invalid is not None:
        return "INVALID"
    return " · ".join("PASS" if c.passed else "FAIL" for c in figure.checks)


def table(figures: list[Figure]) -> str:
    """A Markdown table (it reads as well in a terminal as in the README)."""
    header = (
        "backend",
        "measurement",
        "figure",
        "p50 ms",
        "p99 ms",
        "ratio",
        "target",
        "result",
        "notes",
    )
    rows = [header, tuple("---" for _ in header)]
    for f in figures:
        value = "" if f.value is None else f"{_number(f.value, 1 if f.value < 100 else 0)} {f.unit}"
        result = _result(f) + (f": {f.skipped}" if f.skipped else "")
        notes = "; ".join(n for n in (f.note, f.invalid or "") if n)
        rows.append(
            (
                f.backend,
                f.name,
                value,
                _number(f.p50_ms, 1),
                _number(f.p99_ms, 1),
                "" if f.ratio is None else f"{f.ratio:.2f}",
                " · ".join(c.target for c in f.checks),
                result,
                notes,
            )
        )
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows)


def failures(figures: list[Figure]) -> list[str]:
    return [
        f"{f.backend} {f.name}: {c.target}"
        for f in figures
        if f.skipped is None and f.invalid is None
        for c in f.checks
        if not c.passed
    ]
