"""Operational routes."""

from __future__ import annotations

from litestar import get

from app.http.schemas import Health


@get("/healthz", operation_id="healthz", tags=["operations"], summary="Process is up")
async def healthz() -> Health:
    """Answers 200 while the process serves HTTP."""
    return Health(status="ok")
