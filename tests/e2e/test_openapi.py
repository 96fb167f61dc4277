"""The committed openapi/openapi.json is what the app serves."""

from __future__ import annotations

import json
from pathlib import Path

from app.cli import openapi_json
from tests.e2e.conftest import Router

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    assert json.loads(COMMITTED.read_text()) == json.loads(openapi_json()), (
        "openapi/openapi.json is stale: run `make openapi`"
    )


async def test_served_openapi_documents_every_route_and_error(router: Router) -> None:
    served = (await router.client.get("/schema/openapi.json")).json()
    paths = served["paths"]

    send = paths["/v1/whatsapp/messages"]["post"]
    assert send["operationId"] == "sendMessage"
    assert "to" in send["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"202", "400", "401", "403", "413", "415", "422"} <= set(send["responses"])
    assert paths["/v1/whatsapp/templates"]["post"]["operationId"] == "sendTemplate"
    assert paths["/v1/whatsapp/messages/{message_id}"]["get"]["operationId"] == "getMessage"
    assert {"get", "post"} <= set(paths["/v1/whatsapp/webhook"])
    committed = json.loads(COMMITTED.read_text())
    for path in paths:
        assert path in committed["paths"]
