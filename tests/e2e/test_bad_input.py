"""Every bad input is a 4xx problem+json with a stable code and the correlation id; nothing is
stored and nothing is sent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SENDER, Router


def assert_problem(
    response: httpx.Response, status: int, code: str, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["correlation_id"] == response.headers["x-correlation-id"]
    if param is not None:
        assert problem.get("param") == param, problem
    assert "Traceback" not in response.text
    return problem


@pytest.fixture
async def open_window(router: Router) -> dict[str, str]:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    return headers


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"text": "hi"}, "to"),
        ({"to": "not a phone", "text": "hi"}, "to"),
        ({"to": "+0123456789", "text": "hi"}, "to"),
        ({"to": "+1234", "text": "hi"}, "to"),
        ({"to": "+1234567890123456", "text": "hi"}, "to"),
        ({"to": 14155552671, "text": "hi"}, "to"),
        ({"to": None, "text": "hi"}, "to"),
        ({"to": "+14155552671"}, "text"),
        ({"to": "+14155552671", "text": ""}, "text"),
        ({"to": "+14155552671", "text": "   "}, "text"),
        ({"to": "+14155552671", "text": "x" * 4097}, "text"),
        ({"to": "+14155552671", "text": 5}, "text"),
        ({"to": "+14155552671", "text": "hi", "colour": "red"}, "colour"),
        ({"to": "+14155552671", "text": "hi", "preview_url": "yes"}, "preview_url"),
        (
            {"to": "+14155552671", "text": "x" * 1025, "buttons": [{"id": "a", "title": "A"}]},
            "text",
        ),
        ({"to": "+14155552671", "text": "hi", "buttons": []}, "buttons"),
        (
            {
                "to": "+14155552671",
                "text": "hi",
                "buttons": [{"id": str(i), "title": str(i)} for i in range(4)],
            },
            "buttons",
        ),
        (
            {"to": "+14155552671", "text": "hi", "buttons": [{"id": "a", "title": "x" * 21}]},
            "buttons[0].title",
        ),
        (
            {
                "to": "+14155552671",
                "text": "hi",
                "buttons": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}],
            },
            "buttons[1].id",
        ),
        (
            {
                "to": "+14155552671",
                "text": "hi",
                "header": "x" * 61,
                "buttons": [{"id": "a", "title": "A"}],
            },
            "header",
        ),
        ({"to": "+14155552671", "text": "hi", "footer": "Only a footer"}, "buttons"),
        (
            {"to": "+14155552671", "media": {"kind": "image", "url": "http://ex.com/a.png"}},
            "media.url",
        ),
        (
            {"to": "+14155552671", "media": {"kind": "gif", "url": "https://ex.com/a.gif"}},
            "media.kind",
        ),
        (
            {
                "to": "+14155552671",
                "text": "caption",
                "media": {"kind": "sticker", "url": "https://ex.com/s.webp"},
            },
            "text",
        ),
        ({"to": "+14155552671", "text": "hi", "reply_to": "not-a-wamid"}, "reply_to"),
        ({"to": "+14155552671", "text": "hi", "metadata": {"k": 1}}, "metadata"),
        (
            {"to": "+14155552671", "text": "hi", "metadata": {f"k{i}": "v" for i in range(17)}},
            "metadata",
        ),
        ({"to": "+14155552671", "text": "hi", "metadata": {"k": "v" * 2100}}, "metadata"),
        ({"to": "+14155552671", "text": "hi", "metadata": {"nested": {"a": "b"}}}, "metadata"),
    ],
)
async def test_invalid_message_fields_name_the_param(
    router: Router, open_window: dict[str, str], body: dict[str, Any], param: str
) -> None:
    response = await router.client.post("/v1/whatsapp/messages", json=body, headers=open_window)

    assert_problem(response, 422, "validation_failed", param)
    assert await router.stored_messages() == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "malformed_json"),
        (b"[1, 2]", "application/json", 400, "malformed_json"),
        (b'"a string"', "application/json", 400, "malformed_json"),
        (b'{"to": "+14155552671", "text": "\xff\xfe"}', "application/json", 400, "malformed_json"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "malformed_json"),
        (b'{"to": "+14155552671", "text": "hi"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"to": "+14155552671", "text": "hi"}', "", 415, "unsupported_media_type"),
        (
            b'{"to": "+14155552671", "text": "' + b"x" * 70_000 + b'"}',
            "application/json",
            413,
            "payload_too_large",
        ),
    ],
)
async def test_unreadable_bodies_are_refused(
    router: Router,
    open_window: dict[str, str],
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    headers = {**open_window}
    if content_type:
        headers["Content-Type"] = content_type
    response = await router.client.post("/v1/whatsapp/messages", content=content, headers=headers)

    assert_problem(response, status, code)
    assert await router.stored_messages() == 0


async def test_huge_numbers_and_deep_objects_in_known_fields_are_4xx(
    router: Router, open_window: dict[str, str]
) -> None:
    huge = b'{"to": 1' + b"0" * 400 + b', "text": "hi"}'
    deep = (
        b'{"to": "+14155552671", "text": "hi", "metadata": '
        + b'{"a": ' * 300
        + b'"x"'
        + b"}" * 300
        + b"}"
    )

    for content in (huge, deep):
        response = await router.client.post(
            "/v1/whatsapp/messages",
            content=content,
            headers={**open_window, "Content-Type": "application/json"},
        )
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["code"] in ("validation_failed", "malformed_json")
    assert await router.stored_messages() == 0


@pytest.mark.parametrize(
    ("template", "param"),
    [
        ({"name": "Order Shipped", "language": "en_US"}, "template.name"),
        ({"name": "order_shipped", "language": "english"}, "template.language"),
        (
            {"name": "order_shipped", "language": "en_US", "components": [{"kind": "body"}]},
            "template.components[0].type",
        ),
        ({"name": "order_shipped"}, "template.language"),
    ],
)
async def test_invalid_templates_name_the_param(
    router: Router, template: dict[str, Any], param: str
) -> None:
    await router.sender()
    headers = await router.key()

    response = await router.client.post(
        "/v1/whatsapp/templates",
        json={"to": "+14155552671", "template": template},
        headers=headers,
    )

    assert_problem(response, 422, "validation_failed", param)


async def test_missing_wrong_and_revoked_keys_get_one_code(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    body = {"to": "+14155552671", "text": "hi"}

    for bad in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"X-API-Key": "wrk_guess"},
        {"Authorization": "Bearer " + "x" * 5000},
    ):
        response = await router.client.post("/v1/whatsapp/messages", json=body, headers=bad)
        assert_problem(response, 401, "invalid_api_key")

    x_api_key = {"X-API-Key": headers["Authorization"].removeprefix("Bearer ")}
    await router.customer_writes()
    assert (
        await router.client.post("/v1/whatsapp/messages", json=body, headers=x_api_key)
    ).status_code == 202


async def test_revoked_key_stops_working_within_the_cache_ttl(router: Router) -> None:
    import asyncio

    from adapters.db import keys as key_repo

    await router.sender()
    headers = await router.key()
    await router.customer_writes()
    assert (await router.send(headers, text="hi")).status_code == 202
    async with router.services.db.write() as conn:
        [key] = await key_repo.list_keys(conn)
        await key_repo.revoke_key(conn, key.id, now=key.created_at)

    await asyncio.sleep(0.3)  # the test app's key cache lives 0.2 s

    assert_problem(await router.send(headers, text="hi"), 401, "invalid_api_key")


async def test_scopes_and_sender_allowlists_are_enforced(router: Router) -> None:
    await router.sender()
    await router.sender("106540352242923")
    await router.customer_writes()
    read_only = await router.key(scopes=["messages:read"])
    only_a = await router.key(scopes=["messages:send"], senders=[SENDER])

    assert_problem(await router.send(read_only, text="hi"), 403, "insufficient_scope")
    assert_problem(
        await router.send(only_a, sender_id="106540352242923", text="hi"),
        403,
        "sender_not_authorized",
        "sender_id",
    )
    inferred = await router.send(only_a, text="hi")
    assert inferred.status_code == 202
    assert inferred.json()["sender_id"] == SENDER
    assert_problem(
        await router.client.get(f"/v1/whatsapp/messages/{inferred.json()['id']}", headers=only_a),
        403,
        "insufficient_scope",
    )


async def test_sender_must_be_registered_and_inferable(router: Router) -> None:
    headers = await router.key()
    assert_problem(await router.send(headers, text="hi"), 422, "unknown_sender", "sender_id")
    assert_problem(
        await router.send(headers, sender_id="999", text="hi"), 422, "unknown_sender", "sender_id"
    )
    await router.sender()
    await router.sender("106540352242923")
    assert_problem(await router.send(headers, text="hi"), 422, "unknown_sender", "sender_id")


async def test_unknown_routes_and_methods_are_problems_with_a_correlation_id(
    router: Router,
) -> None:
    missing = await router.client.get("/v1/nothing-here", headers={"X-Correlation-Id": "abc-1"})
    wrong_method = await router.client.put("/v1/whatsapp/messages")

    assert_problem(missing, 404, "not_found")
    assert missing.json()["correlation_id"] == "abc-1"
    assert_problem(wrong_method, 405, "method_not_allowed")
    assert "POST" in wrong_method.headers["allow"].split(", ")


async def test_client_correlation_ids_are_adopted_when_valid(router: Router) -> None:
    await router.sender()
    headers = await router.key()
    await router.customer_writes()

    adopted = await router.send({**headers, "X-Correlation-Id": "crm:order-991.retry_2"}, text="hi")
    replaced = await router.send({**headers, "X-Correlation-Id": "bad id with spaces"}, text="hi")

    assert adopted.headers["x-correlation-id"] == "crm:order-991.retry_2"
    assert adopted.json()["correlation_id"] == "crm:order-991.retry_2"
    assert replaced.headers["x-correlation-id"] != "bad id with spaces"
    assert replaced.json()["correlation_id"] == replaced.headers["x-correlation-id"]


@pytest.mark.parametrize(
    ("depth", "status", "code"),
    [
        (9, 422, "validation_failed"),
        (2_000, 400, "malformed_json"),
        (50_000, 413, "payload_too_large"),
    ],
)
async def test_deeply_nested_template_components_are_refused(
    router: Router, depth: int, status: int, code: str
) -> None:
    await router.sender()
    headers = await router.key()
    nested = '{"a": ' * depth + "1" + "}" * depth
    body = (
        '{"to": "+14155552671", "template": {"name": "t", "language": "en", '
        '"components": [{"type": "body", "parameters": [' + nested + "]}]}}"
    ).encode()

    response = await router.client.post(
        "/v1/whatsapp/templates",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )

    assert_problem(response, status, code)
    assert await router.stored_messages() == 0
