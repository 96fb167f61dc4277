"""Support staff's view: the whole story of one correlation id, whichever client it belongs to
(the support:read scope is the gate)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from app.container import Services
from app.errors import ApiError
from app.http import docs
from app.http.openapi import SECURITY
from app.http.schemas import CorrelationTrace, TraceEventOut
from app.services.trace import Trace, correlation_trace
from domain.model import ApiKey, Scope


def trace_resource(trace: Trace) -> CorrelationTrace:
    """The wire form, shared with `wa-router trace --json`."""
    return CorrelationTrace(
        correlation_id=trace.correlation_id,
        events=[
            TraceEventOut(at=e.at, kind=e.kind, message_id=e.message_id, detail=e.detail)
            for e in trace.events
        ],
        truncated=trace.truncated,
    )


class SupportController(Controller):
    path = "/v1/support/correlations"
    tags = ["support"]
    security = SECURITY

    @get(
        "/{correlation_id:str}",
        operation_id="getCorrelationTrace",
        summary="The support timeline of a correlation id",
        opt={"scope": Scope.SUPPORT_READ, "rate": "read"},
        responses=docs.reads("not_found: nothing is recorded under this correlation id"),
        response_headers=docs.READ_HEADERS,
    )
    async def trace(
        self,
        services: NamedDependency[Services],
        api_key: NamedDependency[ApiKey],
        correlation_id: Annotated[
            str, Parameter(description="The X-Correlation-Id of the request to explain")
        ],
    ) -> CorrelationTrace:
        """In time order: the request (route, client, key id, status code) with its window
        decision and `last_inbound_at`, every Cloud API attempt (HTTP status, Meta code,
        `fbtrace_id`, latency) and every status report, applied or late. Any client's requests
        are shown. No secrets, and no text beyond 80 characters."""
        del api_key  # authenticated and scope-checked by the dependency
        trace = await correlation_trace(services.db, correlation_id)
        if trace is None:
            raise ApiError(
                404,
                "not_found",
                f"nothing is recorded under correlation id {correlation_id[:64]!r}",
            )
        return trace_resource(trace)
