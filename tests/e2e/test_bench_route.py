"""The benchmarks' reference route (app/http/bench.py): mounted only when
``WA_ROUTER_BENCH_ROUTES`` is on, and never in the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from app.settings import load_settings
from tests.e2e.conftest import Router, running_router


def test_the_setting_is_off_unless_asked_for() -> None:
    assert load_settings({}).bench_routes is False
    assert load_settings({"WA_ROUTER_BENCH_ROUTES": "1"}).bench_routes is True


async def test_there_is_no_bench_route_by_default(router: Router) -> None:
    response = await router.client.post("/bench/bare", json={"to": "+14155552671", "text": "hi"})
    assert response.status_code == 404


async def test_the_bench_route_decodes_and_answers_202_outside_the_schema(tmp_path: Path) -> None:
    async with running_router(tmp_path, bench_routes=True) as router:
        ok = await router.client.post("/bench/bare", json={"to": "+14155552671", "text": "hi"})
        bad = await router.client.post("/bench/bare", json={"to": "+14155552671"})
        schema = (await router.client.get("/schema/openapi.json")).json()
    assert (ok.status_code, ok.json()) == (202, {"accepted": True})
    assert bad.status_code == 400
    assert bad.json()["code"] == "malformed_json"
    assert not [path for path in schema["paths"] if path.startswith("/bench")]
