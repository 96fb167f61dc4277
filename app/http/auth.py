"""Authentication (Bearer or X-API-Key) and the route's scope, as a Litestar dependency."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from app.container import Services
from app.errors import ApiError
from app.http.middleware import RATE_LIMIT_HEADERS
from domain.model import ApiKey, Scope

INVALID_KEY = ApiError(
    401,
    "invalid_api_key",
    "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
    headers={"WWW-Authenticate": "Bearer"},
)


def provide_services(state: State) -> Services:
    services: Services = state["services"]
    return services


def _presented_secret(request: Request[Any, Any, Any]) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


RATE_LIMITED = "the request budget of this client is spent; retry after Retry-After seconds"


async def provide_api_key(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> ApiKey:
    """Authenticate, check the route's scope, then spend the client's budget for the route.

    Rate-limit headers are left in the request state; the correlation middleware adds them to
    whatever response follows (2xx or error)."""
    limiter = services.limiter
    address = request.client.host if request.client else "unknown"
    if (blocked := await limiter.auth_blocked(address)) is not None:
        raise ApiError(
            429,
            "rate_limited",
            "too many failed authentications from this address",
            headers=blocked,
        )
    secret = _presented_secret(request)
    key = await services.keys.authenticate(secret) if secret else None
    if key is None:
        if (refused := await limiter.auth_failed(address)) is not None:
            raise ApiError(
                429,
                "rate_limited",
                "too many failed authentications from this address",
                headers=refused,
            )
        raise ApiError(
            INVALID_KEY.status, INVALID_KEY.code, INVALID_KEY.detail, headers=INVALID_KEY.headers
        )
    scope: Scope | None = request.route_handler.opt.get("scope")
    if scope is not None and scope not in key.scopes:
        raise ApiError(403, "insufficient_scope", f"this API key lacks the {scope} scope")
    rate = request.route_handler.opt.get("rate")
    quotas = limiter.limits.send if rate == "send" else limiter.limits.read if rate else ()
    if quotas:
        verdict, headers = await limiter.spend(key.client_id, quotas)
        request.scope["state"][RATE_LIMIT_HEADERS] = headers
        if not verdict.allowed:
            raise ApiError(429, "rate_limited", RATE_LIMITED, headers=headers)
    return key
