"""What a message says, validated against the Cloud API's limits (cloud-api.md §1).

Validation raises :class:`ContentError` naming the offending field (``param``), so the HTTP layer
can answer 422 ``validation_failed`` with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

TEXT_MAX = 4096
INTERACTIVE_BODY_MAX = 1024
HEADER_MAX = 60
FOOTER_MAX = 60
BUTTONS_MAX = 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
CAPTION_MAX = 1024
FILENAME_MAX = 240
URL_MAX = 2048
METADATA_KEYS_MAX = 16
METADATA_BYTES_MAX = 2048
REPLY_TO_MAX = 512
TEMPLATE_NAME_MAX = 512
TEMPLATE_COMPONENTS_MAX = 20
TEMPLATE_COMPONENT_DEPTH = 8  # component → parameters → parameter → image/currency → …

_TEMPLATE_NAME = re.compile(r"[a-z0-9_]+")
_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Za-z]{2,4})?")
_WAMID = re.compile(r"wamid\.[A-Za-z0-9+/=_\-.]+")
_TEMPLATE_COMPONENT_TYPES = frozenset(
    {"header", "body", "button", "footer", "carousel", "limited_time_offer"}
)


class ContentError(ValueError):
    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


class MessageKind(StrEnum):
    TEXT = "text"
    INTERACTIVE = "interactive"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"
    STICKER = "sticker"
    TEMPLATE = "template"


MEDIA_KINDS = frozenset(
    {
        MessageKind.IMAGE,
        MessageKind.VIDEO,
        MessageKind.AUDIO,
        MessageKind.DOCUMENT,
        MessageKind.STICKER,
    }
)
_CAPTIONLESS = frozenset({MessageKind.AUDIO, MessageKind.STICKER})


@dataclass(frozen=True, slots=True, kw_only=True)
class Button:
    id: str
    title: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    body: str
    preview_url: bool = False
    kind: MessageKind = MessageKind.TEXT


@dataclass(frozen=True, slots=True, kw_only=True)
class Buttons:
    body: str
    buttons: tuple[Button, ...]
    header: str | None = None
    footer: str | None = None
    kind: MessageKind = MessageKind.INTERACTIVE


@dataclass(frozen=True, slots=True, kw_only=True)
class Media:
    kind: MessageKind
    url: str
    caption: str | None = None
    filename: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    name: str
    language: str
    components: tuple[Mapping[str, Any], ...] = ()
    kind: MessageKind = MessageKind.TEMPLATE


Content = Text | Buttons | Media | Template


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaSpec:
    kind: str
    url: str
    caption: str | None = None
    filename: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ButtonSpec:
    id: str
    title: str


def _bounded(value: str, *, param: str, maximum: int, minimum: int = 1) -> str:
    if len(value) < minimum or not value.strip():
        raise ContentError(param, "must not be empty")
    if len(value) > maximum:
        raise ContentError(param, f"must be at most {maximum} characters (got {len(value)})")
    return value


def _https_url(url: str, *, param: str) -> str:
    if len(url) > URL_MAX:
        raise ContentError(param, f"must be at most {URL_MAX} characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket, characters that fail NFKC checks
        raise ContentError(param, "must be an https:// URL the Cloud API can fetch") from None
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in url):
        raise ContentError(param, "must be an https:// URL the Cloud API can fetch")
    return url


def free_form(
    *,
    text: str | None,
    preview_url: bool | None = None,
    header: str | None = None,
    footer: str | None = None,
    buttons: Sequence[ButtonSpec] | None = None,
    media: MediaSpec | None = None,
) -> Text | Buttons | Media:
    """Choose the message kind from the fields given and check every Cloud API limit."""
    interactive = buttons is not None or header is not None or footer is not None
    if media is not None:
        if interactive:
            raise ContentError("media", "cannot be combined with header, footer or buttons")
        if preview_url:
            raise ContentError("preview_url", "applies to text messages only")
        return _media(media, caption=text)
    if interactive:
        if preview_url:
            raise ContentError("preview_url", "applies to text messages only")
        return _buttons(text=text, header=header, footer=footer, buttons=buttons)
    if text is None:
        raise ContentError("text", "is required unless media is given")
    return Text(body=_bounded(text, param="text", maximum=TEXT_MAX), preview_url=bool(preview_url))


def _media(media: MediaSpec, *, caption: str | None) -> Media:
    try:
        kind = MessageKind(media.kind)
    except ValueError:
        kind = None
    if kind not in MEDIA_KINDS or kind is None:
        raise ContentError("media.kind", "must be one of audio, document, image, sticker, video")
    url = _https_url(media.url, param="media.url")
    if media.caption is not None and caption is not None:
        raise ContentError("media.caption", "give the caption either as text or as media.caption")
    caption = caption if caption is not None else media.caption
    param = "text" if media.caption is None else "media.caption"
    if caption is not None:
        if kind in _CAPTIONLESS:
            raise ContentError(param, f"{kind} messages take no caption")
        _bounded(caption, param=param, maximum=CAPTION_MAX)
    if media.filename is not None:
        if kind is not MessageKind.DOCUMENT:
            raise ContentError("media.filename", "applies to documents only")
        _bounded(media.filename, param="media.filename", maximum=FILENAME_MAX)
    return Media(kind=kind, url=url, caption=caption, filename=media.filename)


def _buttons(
    *,
    text: str | None,
    header: str | None,
    footer: str | None,
    buttons: Sequence[ButtonSpec] | None,
) -> Buttons:
    if text is None:
        raise ContentError("text", "is required for a message with buttons")
    _bounded(text, param="text", maximum=INTERACTIVE_BODY_MAX)
    if not buttons:
        raise ContentError("buttons", "header and footer come with 1 to 3 reply buttons")
    if len(buttons) > BUTTONS_MAX:
        raise ContentError("buttons", f"at most {BUTTONS_MAX} reply buttons")
    if header is not None:
        _bounded(header, param="header", maximum=HEADER_MAX)
    if footer is not None:
        _bounded(footer, param="footer", maximum=FOOTER_MAX)
    seen_ids: set[str] = set()
    seen_titles: set[str] = set()
    for index, button in enumerate(buttons):
        _bounded(button.id, param=f"buttons[{index}].id", maximum=BUTTON_ID_MAX)
        _bounded(button.title, param=f"buttons[{index}].title", maximum=BUTTON_TITLE_MAX)
        if button.id in seen_ids:
            raise ContentError(f"buttons[{index}].id", "button ids must be unique")
        if button.title in seen_titles:
            raise ContentError(f"buttons[{index}].title", "button titles must be unique")
        seen_ids.add(button.id)
        seen_titles.add(button.title)
    return Buttons(
        body=text,
        header=header,
        footer=footer,
        buttons=tuple(Button(id=b.id, title=b.title) for b in buttons),
    )


def _depth(value: object, level: int = 1) -> int:
    """How deeply ``value`` nests (stops counting past the limit)."""
    if level > TEMPLATE_COMPONENT_DEPTH:
        return level
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list | tuple):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def template(*, name: str, language: str, components: Sequence[Mapping[str, Any]]) -> Template:
    if len(name) > TEMPLATE_NAME_MAX or not _TEMPLATE_NAME.fullmatch(name):
        raise ContentError("template.name", "lowercase letters, digits and _ (at most 512)")
    if not _LANGUAGE.fullmatch(language):
        raise ContentError("template.language", "a Cloud API language code such as en or en_US")
    if len(components) > TEMPLATE_COMPONENTS_MAX:
        raise ContentError("template.components", f"at most {TEMPLATE_COMPONENTS_MAX} components")
    for index, component in enumerate(components):
        if _depth(component) > TEMPLATE_COMPONENT_DEPTH:
            raise ContentError(
                f"template.components[{index}]",
                f"nested deeper than the Cloud API's shape ({TEMPLATE_COMPONENT_DEPTH} levels)",
            )
        kind = component.get("type")
        if not isinstance(kind, str) or kind.lower() not in _TEMPLATE_COMPONENT_TYPES:
            raise ContentError(
                f"template.components[{index}].type",
                "one of " + ", ".join(sorted(_TEMPLATE_COMPONENT_TYPES)),
            )
    return Template(name=name, language=language, components=tuple(components))


VALID_FOR_MAX = timedelta(days=30)  # Meta's own TTL for an undeliverable message


def valid_until(value: datetime, now: datetime) -> datetime:
    """A deadline after which the message must not go out: in the future, ≤ 30 days ahead."""
    if value <= now:
        raise ContentError("valid_until", "must be in the future")
    if value - now > VALID_FOR_MAX:
        raise ContentError("valid_until", "must be at most 30 days ahead")
    return value


def reply_to(wamid: str) -> str:
    if len(wamid) > REPLY_TO_MAX or not _WAMID.fullmatch(wamid):
        raise ContentError("reply_to", "must be the wamid of a message in this conversation")
    return wamid


def metadata(values: Mapping[str, str]) -> dict[str, str]:
    """A flat object of strings, at most 16 keys and 2 KiB once encoded; echoed on the status."""
    if len(values) > METADATA_KEYS_MAX:
        raise ContentError("metadata", f"at most {METADATA_KEYS_MAX} keys")
    for key in values:
        if not key:
            raise ContentError("metadata", "keys must not be empty")
    size = len(json.dumps(dict(values), ensure_ascii=False, separators=(",", ":")).encode())
    if size > METADATA_BYTES_MAX:
        raise ContentError("metadata", f"at most {METADATA_BYTES_MAX} bytes encoded (got {size})")
    return dict(values)


def summary(content: Content, *, limit: int = 80) -> str:
    """A short, log-safe description of the content for the support timeline."""
    match content:
        case Text(body=body) | Buttons(body=body):
            text = body
        case Media(kind=kind, caption=caption):
            text = f"[{kind}] {caption or ''}".strip()
        case Template(name=name, language=language):
            text = f"[template {name}/{language}]"
    return text if len(text) <= limit else text[: limit - 1] + "…"
