"""Fuzzing every route of openapi/openapi.json against the real server process: no 5xx, and
every answer matches the documented status codes, content types and schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.processes import ROOT, RouterProcess, fake_graph, router_process

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]

schema = schemathesis.openapi.from_path(ROOT / "openapi" / "openapi.json")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RouterProcess, dict[str, str]]]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    with fake_graph() as graph, router_process(tmp, graph) as router:
        # Sandbox mode (the committed document includes its route), budgets out of the way.
        for name in ("WA_ROUTER_ACCESS_TOKEN", "WA_ROUTER_APP_SECRET"):
            router.env.pop(name)
        router.env["WA_ROUTER_SEND_RATE_PER_MINUTE"] = "1000000"
        router.env["WA_ROUTER_READ_RATE_PER_MINUTE"] = "1000000"
        headers = router.key("messages:send,messages:read,templates:send,support:read")
        router.start()
        yield router, headers


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_route_answers_5xx_or_off_schema(
    case: schemathesis.Case, server: tuple[RouterProcess, dict[str, str]]
) -> None:
    router, headers = server
    case.call_and_validate(base_url=router.url, headers=headers, checks=CHECKS, timeout=10)
