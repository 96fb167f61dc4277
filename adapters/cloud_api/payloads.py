"""The Cloud API's exact JSON for each message kind (cloud-api.md §1)."""

from __future__ import annotations

from typing import Any

from domain.content import Buttons, Content, Media, MessageKind, Template, Text
from domain.phones import e164


def _body(content: Content) -> tuple[str, dict[str, Any]]:
    match content:
        case Text(body=body, preview_url=preview_url):
            return "text", {"preview_url": preview_url, "body": body}
        case Buttons(body=body, buttons=buttons, header=header, footer=footer):
            interactive: dict[str, Any] = {"type": "button"}
            if header is not None:
                interactive["header"] = {"type": "text", "text": header}
            interactive["body"] = {"text": body}
            if footer is not None:
                interactive["footer"] = {"text": footer}
            interactive["action"] = {
                "buttons": [
                    {"type": "reply", "reply": {"id": b.id, "title": b.title}} for b in buttons
                ]
            }
            return "interactive", interactive
        case Media(kind=kind, url=url, caption=caption, filename=filename):
            media: dict[str, Any] = {"link": url}
            if caption is not None:
                media["caption"] = caption
            if filename is not None and kind is MessageKind.DOCUMENT:
                media["filename"] = filename
            return str(kind), media
        case Template(name=name, language=language, components=components):
            spec: dict[str, Any] = {"name": name, "language": {"code": language}}
            if components:
                spec["components"] = [dict(c) for c in components]
            return "template", spec


def message_payload(
    content: Content, *, wa_id: str, reply_to: str | None, callback_data: str
) -> dict[str, Any]:
    """The POST /{phone-number-id}/messages body. ``to`` is always ``+`` and the digits; our
    message id rides in ``biz_opaque_callback_data`` so status webhooks can find it."""
    type_, body = _body(content)
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": e164(wa_id),
    }
    if reply_to is not None:
        payload["context"] = {"message_id": reply_to}
    payload["biz_opaque_callback_data"] = callback_data
    payload["type"] = type_
    payload[type_] = body
    return payload
