"""The error a use case raises to refuse a request: a problem's status, stable code and detail.

It carries no web framework: app/services raise it, and app/http/problems.py turns it into a
problem+json response in one place (the CLI prints its detail)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """Raised anywhere in app/ to answer with a problem (app/http/problems.py maps it)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        param: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.param = param
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
