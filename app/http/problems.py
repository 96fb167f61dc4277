"""problem+json (RFC 9457) for every error, with a stable ``code`` and the correlation id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from adapters.db.engine import unreachable
from app.errors import ApiError
from app.ids import CORRELATION_ID
from app.ids import correlation_id as new_correlation_id
from app.metrics import metrics_of

PROBLEM_JSON = "application/problem+json"
_log = structlog.get_logger("wa_router.http")

TITLES: dict[str, str] = {
    "malformed_json": "Malformed JSON",
    "invalid_api_key": "Invalid API key",
    "insufficient_scope": "Insufficient scope",
    "sender_not_authorized": "Sender not authorized",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "idempotency_in_progress": "Idempotent request in progress",
    "payload_too_large": "Payload too large",
    "unsupported_media_type": "Unsupported media type",
    "validation_failed": "Validation failed",
    "unknown_sender": "Unknown sender",
    "outside_service_window": "Outside the customer service window",
    "template_not_found": "Template not found",
    "template_not_approved": "Template not approved",
    "template_parameter_mismatch": "Template parameter mismatch",
    "rate_limited": "Rate limited",
    "webhook_signature_invalid": "Invalid webhook signature",
    "webhook_verification_failed": "Webhook verification failed",
    "internal_error": "Internal error",
    "not_ready": "Not ready",
}


class Problem(msgspec.Struct, omit_defaults=True):
    """An error (RFC 9457). ``param`` names the offending field when there is one."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    correlation_id: str
    param: str | None = None


class ApprovedTemplate(msgspec.Struct):
    """One of the sender's APPROVED templates, from its synced catalog."""

    name: str
    language: str
    category: str


class WindowProblem(Problem, omit_defaults=True):
    """422 outside_service_window: use the templates route instead. ``templates`` lists the
    sender's APPROVED templates (at most 50, by name then language; empty when its catalog was
    never synced) so the caller can choose one."""

    last_inbound_at: str | None = None
    window_closed_at: str | None = None
    templates_url: str = "/v1/whatsapp/templates"
    templates: list[ApprovedTemplate] = []


def correlation_of(request: Request[Any, Any, Any]) -> str:
    return str(request.scope.get("state", {}).get("correlation_id", ""))


def _ensure_correlation(request: Request[Any, Any, Any]) -> tuple[str, bool]:
    """The request's correlation id, and whether the response still needs the header: Litestar
    answers unknown routes (404/405) before any route middleware has run."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    cid = state.get("correlation_id")
    if cid:
        return str(cid), False
    supplied = request.headers.get("x-correlation-id", "")
    cid = supplied if CORRELATION_ID.fullmatch(supplied) else new_correlation_id()
    state["correlation_id"] = cid
    return cid, True


def problem_response(request: Request[Any, Any, Any], error: ApiError) -> Response[bytes]:
    cid, needs_header = _ensure_correlation(request)
    headers = dict(error.headers)
    if needs_header:
        headers["X-Correlation-Id"] = cid
    body: dict[str, Any] = {
        "type": f"https://wa-router.dev/problems/{error.code.replace('_', '-')}",
        "title": TITLES.get(error.code, error.code.replace("_", " ").capitalize()),
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "correlation_id": cid,
    }
    if error.param is not None:
        body["param"] = error.param
    body.update(error.extra)
    metrics = metrics_of(request.app.state)
    if metrics is not None:
        method, route = request.method, request.scope.get("path_template")
        metrics.problem(method=method, route=route, status=error.status, code=error.code)
        if needs_header:  # answered before routing: the middleware does not count it
            metrics.request(method=method, route=None, status=error.status)
    return Response(
        content=msgspec.json.encode(body),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _param_of_validation(exc: ValidationException) -> str | None:
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], Mapping):
        key = extra[0].get("key")
        return str(key) if key else None
    return None


def handle_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return problem_response(request, exc)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (routing, limits, parameters) in our vocabulary."""
    status = exc.status_code
    if isinstance(exc, ValidationException):
        param = _param_of_validation(exc)
        detail = f"{param} is not valid" if param else "a parameter is not valid"
        error = ApiError(422, "validation_failed", detail, param=param)
    elif status == 404:
        error = ApiError(404, "not_found", "no such resource")
    elif status == 405:
        allow = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow")
        headers = {"Allow": allow} if allow else {}
        error = ApiError(
            405, "method_not_allowed", "this method is not allowed here", headers=headers
        )
    elif status == 413:
        error = ApiError(413, "payload_too_large", "the body is larger than 64 KiB")
    elif status == 415:
        error = ApiError(415, "unsupported_media_type", "send application/json")
    elif status >= 500:
        error = ApiError(500, "internal_error", "the router failed; quote the correlation id")
    elif status == 400:
        error = ApiError(400, "malformed_json", str(exc.detail or "bad request"))
    else:
        error = ApiError(status, "http_" + str(status), str(exc.detail or "request refused"))
    return problem_response(request, error)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if unreachable(exc):
        # Nothing was stored (the transaction did not commit): the caller may simply retry.
        _log.error("database_unreachable", path=request.url.path, error=repr(exc)[:500])
        return problem_response(
            request,
            ApiError(
                503,
                "not_ready",
                "the database is unreachable; nothing was stored, retry shortly",
                headers={"Retry-After": "1"},
            ),
        )
    _log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return problem_response(
        request, ApiError(500, "internal_error", "the router failed; quote the correlation id")
    )


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
