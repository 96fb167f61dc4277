"""The documented error answers of each kind of route, in one place (OpenAPI ``responses``).

Every route that takes an API key can answer 401, 403 and 429 (failed authentications are
limited per address); send routes add the body errors, 409 and 422; read routes 404 and 422
for a wrong query or path parameter."""

from __future__ import annotations

from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec

from app.http.problems import Problem, WindowProblem


def problem(description: str, data: type = Problem) -> ResponseSpec:
    return ResponseSpec(
        data_container=data,
        description=description,
        media_type="application/problem+json",
        generate_examples=False,
    )


UNAUTHORIZED = problem("invalid_api_key: missing, malformed, unknown or revoked key")
FORBIDDEN = problem("insufficient_scope, or sender_not_authorized (param sender_id)")
RATE_LIMITED = problem(
    "rate_limited: the client's budget for this route, or this address's budget of failed "
    "authentications, is spent; see Retry-After and the RateLimit headers"
)
DATABASE_DOWN = problem(
    "not_ready: the database is unreachable; nothing was stored, retry after Retry-After"
)
KEYED = {401: UNAUTHORIZED, 403: FORBIDDEN, 429: RATE_LIMITED, 503: DATABASE_DOWN}

BODY = {
    400: problem("malformed_json: the body is not a JSON object (or not UTF-8)"),
    413: problem("payload_too_large: body over 64 KiB"),
    415: problem("unsupported_media_type: send application/json"),
}

SEND = {
    **KEYED,
    **BODY,
    409: problem(
        "idempotency_in_progress: the same Idempotency-Key is still being processed; "
        "see Retry-After"
    ),
    422: problem(
        "validation_failed (param names the field, or Idempotency-Key), unknown_sender, "
        "idempotency_key_reused, or outside_service_window (with last_inbound_at, "
        "window_closed_at, templates_url and templates: the sender's approved templates)",
        WindowProblem,
    ),
}

TEMPLATE_SEND = {
    **SEND,
    422: problem(
        "validation_failed (param names the field, or Idempotency-Key), unknown_sender, "
        "idempotency_key_reused, or, against the sender's synced template catalog, "
        "template_not_found, template_not_approved or template_parameter_mismatch "
        "(param template.components)"
    ),
}

SANDBOX = {
    **KEYED,
    **BODY,
    404: problem("not_found: the sandbox is off (an access token is set)"),
    422: problem("validation_failed (param names the field) or unknown_sender"),
}


def reads(not_found: str | None, invalid: str | None = None) -> dict[int, ResponseSpec]:
    """A read route's errors; ``None`` where the route never answers that status."""
    specs = dict(KEYED)
    if not_found is not None:
        specs[404] = problem(not_found)
    if invalid is not None:
        specs[422] = problem(invalid)
    return specs


def _header(name: str, description: str) -> ResponseHeader:
    return ResponseHeader(name=name, description=description, documentation_only=True)


CORRELATION_HEADER = _header(
    "X-Correlation-Id", "The request's correlation id (the client's own when it sent a valid one)"
)
RATE_HEADERS = [
    _header("X-RateLimit-Limit", "Requests per period of the tightest budget"),
    _header("X-RateLimit-Remaining", "Requests left in that budget now"),
    _header("X-RateLimit-Reset", "Unix seconds when that budget is whole again"),
    _header("RateLimit-Policy", 'IETF draft: the budgets, e.g. "send";q=60;w=60'),
    _header("RateLimit", 'IETF draft: the tightest budget now, e.g. "send";r=59;t=1'),
]
SEND_HEADERS = [
    _header("Location", "/v1/whatsapp/messages/{id} of the accepted message"),
    _header(
        "Idempotent-Replayed",
        "true when this is the stored answer to an earlier request with the same Idempotency-Key",
    ),
    CORRELATION_HEADER,
    *RATE_HEADERS,
]
STATUS_HEADERS = [
    _header("ETag", "Send it back in If-None-Match: 304 while nothing changed"),
    _header("Retry-After", "While the status is not final: seconds until polling again is useful"),
    CORRELATION_HEADER,
    *RATE_HEADERS,
]
READ_HEADERS = [CORRELATION_HEADER, *RATE_HEADERS]
