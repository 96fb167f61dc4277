"""Benchmarks only (``WA_ROUTER_BENCH_ROUTES=1``): the reference route ``make bench`` compares
the real routes with, served by the same process, framework and middleware.

It does the least a JSON route can do: decode a small body into a Struct, answer 202. It is
left out of the OpenAPI document and never mounted unless the setting is on."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, post

from app.errors import ApiError


class BareBody(msgspec.Struct, forbid_unknown_fields=True):
    to: str
    text: str


_decoder = msgspec.json.Decoder(BareBody)
_ACCEPTED = b'{"accepted":true}'


@post("/bench/bare", operation_id="benchBare", include_in_schema=False, status_code=202)
async def bench_bare(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        _decoder.decode(await request.body())
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError(400, "malformed_json", "expected {to, text}") from None
    return Response(content=_ACCEPTED, status_code=202, media_type="application/json")
