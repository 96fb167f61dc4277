"""The template catalog and the preflight of a template send against it (cloud-api.md §1.6, §7).

Meta answers a wrong template only after the message was queued (132000, 132001, 132015 …);
checking against the synced catalog turns those into a 422 the caller sees at once. Where no
catalog was ever synced for the sender's WABA nothing is checked: a fresh install must still
send, and Meta stays the judge.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from domain.content import Template

APPROVED = "APPROVED"

#: Statuses of the catalog and of ``message_template_status_update`` events (cloud-api.md §7).
STATUSES = frozenset(
    {
        APPROVED,
        "PENDING",
        "REJECTED",
        "PAUSED",
        "DISABLED",
        "IN_APPEAL",
        "PENDING_DELETION",
        "DELETED",
        "ARCHIVED",
        "LIMIT_EXCEEDED",
        "LOCKED",
    }
)

#: Header formats that take exactly one parameter at send time (the media, or the location).
ONE_PARAMETER_HEADERS = frozenset({"IMAGE", "VIDEO", "DOCUMENT", "LOCATION"})

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


class ParameterFormat(StrEnum):
    POSITIONAL = "POSITIONAL"
    NAMED = "NAMED"


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogTemplate:
    """One template of a WABA's catalog, as Meta lists it.

    ``components`` is Meta's own list (``HEADER``, ``BODY`` …); ``None`` when we know the
    template only from a status webhook, in which case its parameters are not checked."""

    name: str
    language: str
    status: str
    category: str | None = None
    parameter_format: ParameterFormat = ParameterFormat.POSITIONAL
    components: tuple[Mapping[str, Any], ...] | None = ()
    template_id: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == APPROVED


class TemplateRejected(ValueError):
    """A template send the catalog says Meta would refuse; the HTTP layer answers 422."""

    def __init__(self, code: str, detail: str, *, param: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.param = param


def parameter_format(value: str | None) -> ParameterFormat:
    """Meta leaves ``parameter_format`` out on older templates: those are positional."""
    return ParameterFormat.NAMED if (value or "").upper() == "NAMED" else ParameterFormat.POSITIONAL


def placeholders(text: str) -> list[str]:
    """The distinct placeholders of a text, in order of first appearance."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(text)))


def status_after_event(event: str, current: str | None) -> str | None:
    """The stored status after a ``message_template_status_update`` event, or ``None`` to leave
    it as it is (an event that says nothing about sendability, or one we do not know)."""
    event = event.upper()
    if event in ("REINSTATED", "UNARCHIVED"):
        # Back to sendable. (unverified) Meta does not say what an unarchived template's status
        # becomes; a wrong APPROVED only lets Meta answer 132001, a wrong refusal would block.
        return APPROVED
    if event == "FLAGGED":
        # Quality warning: still sendable until Meta pauses or disables it.
        return current or APPROVED
    return event if event in STATUSES else None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Expected:
    part: str  # "header" or "body"
    names: tuple[str, ...]  # the placeholders; for a media header one empty name


def _expected(components: Iterable[Mapping[str, Any]]) -> list[_Expected]:
    """What the header and body take. A header format we do not know is left to Meta."""
    header: tuple[str, ...] | None = ()
    body: tuple[str, ...] = ()
    for component in components:
        kind = str(component.get("type", "")).upper()
        text = component.get("text")
        text = text if isinstance(text, str) else ""
        if kind == "HEADER":
            header_format = str(component.get("format", "TEXT")).upper()
            if header_format in ONE_PARAMETER_HEADERS:
                header = ("",)
            elif header_format == "TEXT":
                header = tuple(placeholders(text))
            else:
                header = None
        elif kind == "BODY":
            body = tuple(placeholders(text))
    expected = [] if header is None else [_Expected(part="header", names=header)]
    return [*expected, _Expected(part="body", names=body)]


def _given(components: Sequence[Mapping[str, Any]], part: str) -> list[Mapping[str, Any]]:
    given: list[Mapping[str, Any]] = []
    for component in components:
        if str(component.get("type", "")).lower() != part:
            continue
        parameters = component.get("parameters")
        if isinstance(parameters, list):
            given.extend(p if isinstance(p, Mapping) else {} for p in parameters)
    return given


def _plural(count: int) -> str:
    return f"{count} parameter" + ("" if count == 1 else "s")


def _mismatch(detail: str) -> TemplateRejected:
    return TemplateRejected("template_parameter_mismatch", detail, param="template.components")


def _check_names(part: str, expected: Collection[str], given: list[Mapping[str, Any]]) -> None:
    names = [p.get("parameter_name") for p in given]
    given_names = {n for n in names if isinstance(n, str)}
    if given_names == set(expected) and len(given_names) == len(names):
        return
    missing = sorted(set(expected) - given_names)
    unknown = sorted(given_names - set(expected))
    unnamed = sum(1 for n in names if not isinstance(n, str))
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unknown:
        problems.append("unknown " + ", ".join(unknown))
    if unnamed:
        problems.append(f"{unnamed} without parameter_name")
    if len(given_names) + unnamed != len(names):
        problems.append("a parameter_name repeated")
    raise _mismatch(
        f"{part} expects parameters named {', '.join(expected)} ({'; '.join(problems)})"
    )


def check_template(
    request: Template, entry: CatalogTemplate | None, *, catalog_synced: bool
) -> None:
    """Raise :class:`TemplateRejected` when the synced catalog says Meta would refuse this send.

    Checks, in order: the name+language exists, it is APPROVED, and the header and body
    components carry as many parameters as the template's placeholders (for a NAMED template,
    exactly its placeholder names). Buttons and carousels are left to Meta."""
    if not catalog_synced:
        return
    label = f"{request.name} ({request.language})"
    if entry is None:
        raise TemplateRejected(
            "template_not_found",
            f"no template {label} in the sender's synced catalog; run wa-router templates sync "
            "if it was created since",
            param="template.name",
        )
    if not entry.approved:
        raise TemplateRejected(
            "template_not_approved",
            f"template {label} is {entry.status}; only APPROVED templates can be sent",
            param="template.name",
        )
    if entry.components is None:
        return  # known from a status webhook only: its placeholders are not known
    named = entry.parameter_format is ParameterFormat.NAMED
    for expected in _expected(entry.components):
        given = _given(request.components, expected.part)
        if len(given) != len(expected.names):
            raise _mismatch(
                f"{expected.part} expects {_plural(len(expected.names))}, got {len(given)}"
            )
        media_header = expected.names == ("",)
        if named and given and not media_header:
            _check_names(expected.part, expected.names, given)
