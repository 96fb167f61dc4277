"""CloudApiClient.list_templates over a real httpx.AsyncClient on a mock transport that answers
like Graph's cursor paging (cloud-api.md §7), and the sandbox simulator's catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from adapters.cloud_api.client import CloudApiClient, GraphHttp
from adapters.cloud_api.errors import CloudApiStatusError, CloudApiUnavailable
from adapters.cloud_api.sandbox import SANDBOX_WABA_ID, SandboxCloudApi
from domain.templates import ParameterFormat

WABA = "102290129340398"
TOKEN = "EAAG-test-token"
Handler = Callable[[httpx.Request], httpx.Response]


def listed(name: str, **kw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "language": "en_US",
        "status": "APPROVED",
        "category": "UTILITY",
        "parameter_format": "POSITIONAL",
        "id": "1387372356726668",
        "components": [{"type": "BODY", "text": "Hi {{1}}!", "example": {"body_text": [["P"]]}}],
    }
    entry.update(kw)
    return entry


class PagedGraph:
    """Graph's template listing: ``pages`` answered in turn by the ``after`` cursor; ``next``
    points at another host on purpose, so following it would be visible."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        after = request.url.params.get("after")
        index = 0 if after is None else int(after.removeprefix("cursor-"))
        body: dict[str, Any] = {"data": self.pages[index]}
        if index + 1 < len(self.pages):
            body["paging"] = {
                "cursors": {"before": f"cursor-{index}x", "after": f"cursor-{index + 1}"},
                "next": f"https://elsewhere.example/v25.0/{WABA}/message_templates?after=x",
            }
        else:
            body["paging"] = {"cursors": {"before": "b", "after": "last"}}
        return httpx.Response(200, json=body)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[Handler], CloudApiClient]]:
    made: list[httpx.AsyncClient] = []

    def make(handler: Handler) -> CloudApiClient:
        http = GraphHttp(transport=httpx.MockTransport(handler), base_url="https://graph.example")
        made.append(http)
        return CloudApiClient(http, token=TOKEN, version="v25.0")

    yield make
    for http in made:
        await http.aclose()


async def test_every_page_is_followed_by_the_after_cursor(
    client_for: Callable[[Handler], CloudApiClient],
) -> None:
    graph = PagedGraph(
        [
            [listed("a_first"), listed("a_second", status="PAUSED")],
            [listed("b_named", parameter_format="NAMED", category="marketing")],
            [listed("c_old", parameter_format=None, id=None, components=[])],
        ]
    )

    templates = await client_for(graph.handler).list_templates(WABA)

    assert [t.name for t in templates] == ["a_first", "a_second", "b_named", "c_old"]
    assert templates[1].status == "PAUSED"
    assert templates[2].parameter_format is ParameterFormat.NAMED
    assert templates[2].category == "MARKETING"
    assert templates[3].parameter_format is ParameterFormat.POSITIONAL
    assert templates[3].template_id is None
    assert templates[0].components == (
        {"type": "BODY", "text": "Hi {{1}}!", "example": {"body_text": [["P"]]}},
    )
    assert [r.url.host for r in graph.requests] == ["graph.example"] * 3
    assert {r.url.path for r in graph.requests} == {f"/v25.0/{WABA}/message_templates"}
    assert [r.url.params.get("after") for r in graph.requests] == [None, "cursor-1", "cursor-2"]
    for request in graph.requests:
        assert request.method == "GET"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.url.params["limit"] == "100"
        assert set(request.url.params["fields"].split(",")) == {
            "name",
            "language",
            "status",
            "category",
            "components",
            "parameter_format",
            "id",
        }


async def test_an_empty_catalog_is_one_request(
    client_for: Callable[[Handler], CloudApiClient],
) -> None:
    graph = PagedGraph([[]])

    assert await client_for(graph.handler).list_templates(WABA) == []
    assert len(graph.requests) == 1


async def test_a_meta_error_on_a_later_page_is_a_status_error(
    client_for: Callable[[Handler], CloudApiClient],
) -> None:
    graph = PagedGraph([[listed("a")], [listed("b")]])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("after"):
            return httpx.Response(
                401,
                json={
                    "error": {
                        "message": "(#190) Access token has expired",
                        "type": "OAuthException",
                        "code": 190,
                        "fbtrace_id": "AbC123",
                    }
                },
            )
        return graph.handler(request)

    with pytest.raises(CloudApiStatusError) as caught:
        await client_for(handler).list_templates(WABA)

    assert (caught.value.http_status, caught.value.code) == (401, 190)
    assert caught.value.title == "Access token has expired"
    assert caught.value.fbtrace_id == "AbC123"


@pytest.mark.parametrize(
    "paging",
    [
        {"next": "https://graph.example/next"},  # a next page without a cursor
        {"cursors": {"after": "same"}, "next": "https://graph.example/next"},  # a loop
    ],
)
async def test_paging_that_cannot_advance_is_refused_not_truncated(
    client_for: Callable[[Handler], CloudApiClient], paging: dict[str, Any]
) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"data": [listed("a")], "paging": paging})

    with pytest.raises(CloudApiStatusError, match="after cursor"):
        await client_for(handler).list_templates(WABA)
    assert len(calls) <= 2


async def test_an_unreadable_listing_is_a_status_error(
    client_for: Callable[[Handler], CloudApiClient],
) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"language": "en"}]})

    with pytest.raises(CloudApiStatusError, match="unreadable template list"):
        await client_for(handler).list_templates(WABA)


async def test_a_connection_failure_is_unavailable_and_never_maybe_sent(
    client_for: Callable[[Handler], CloudApiClient],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("scripted", request=request)

    with pytest.raises(CloudApiUnavailable) as caught:
        await client_for(handler).list_templates(WABA)
    assert caught.value.maybe_sent is False


async def _no_delivery(_body: bytes, _signature: str) -> None:
    raise AssertionError("a listing delivers no webhook")


async def _never(_sender: str, _wa_id: str) -> datetime | None:
    return None


async def test_the_sandbox_lists_a_fixed_catalog_for_its_waba_only() -> None:
    sandbox = SandboxCloudApi(
        deliver=_no_delivery, last_inbound=_never, clock=lambda: datetime.now(UTC)
    )

    templates = await sandbox.list_templates(SANDBOX_WABA_ID)

    by_name = {t.name: t for t in templates}
    assert by_name["hello_world"].approved
    assert by_name["order_shipped"].components == (
        {
            "type": "BODY",
            "text": "Hi {{1}}, order {{2}} has shipped",
            "example": {"body_text": [["Ana", "#123"]]},
        },
    )
    assert any(not t.approved for t in templates)
    with pytest.raises(CloudApiStatusError) as caught:
        await sandbox.list_templates(WABA)
    assert caught.value.code == 100
    await sandbox.aclose()
