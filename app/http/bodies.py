"""Request bodies: content type, JSON and types checked here, so every failure is a precise
problem (400 malformed_json, 415, 422 validation_failed with ``param``)."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from litestar import Request

from app.errors import ApiError
from domain.phones import InvalidPhoneNumber, normalise_phone

T = TypeVar("T")
_AT = re.compile(r" - at `\$\.?(.*)`$")
_FIELD = re.compile(r"field `([^`]*)`")


def wa_id_of(raw: str, *, param: str = "to") -> str:
    """The wa_id of a phone number from a request, or 422 naming the field."""
    try:
        return normalise_phone(raw)
    except InvalidPhoneNumber as exc:
        raise ApiError(422, "validation_failed", str(exc), param=param) from None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def param_of(error: msgspec.ValidationError) -> str | None:
    message = str(error)
    at = _AT.search(message)
    path = (at.group(1) if at else "").replace("[...]", "")  # "[...]": a value in a mapping
    field = _FIELD.search(message)
    if field and ("missing required field" in message or "unknown field" in message):
        path = f"{path}.{field.group(1)}" if path else field.group(1)
    return path or None


async def decode_body(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[T]) -> T:
    if not _is_json(request.headers.get("content-type", "")):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    body = await request.body()
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        param = param_of(exc)
        if param is None:  # the document itself is not an object
            raise ApiError(400, "malformed_json", "the body must be a JSON object") from None
        detail = str(exc).split(" - at ")[0]
        raise ApiError(422, "validation_failed", detail, param=param) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "the body is not valid UTF-8") from None
