"""Reads for pollers: the message list (filters, cursor pages, client scoping) and a contact's
service window (API.md "GET /v1/whatsapp/messages", "GET /v1/whatsapp/contacts/{to}/window")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from adapters.db import listing
from app.http.messages import encode_cursor
from domain.model import Scope
from tests.e2e.conftest import CUSTOMER, OTHER_SENDER, SENDER, Router
from tests.e2e.test_bad_input import assert_problem

LIST = "/v1/whatsapp/messages"
OTHER_CUSTOMER = "447700900123"
READ_AND_SEND = (Scope.MESSAGES_SEND, Scope.MESSAGES_READ)


async def send_many(router: Router, headers: dict[str, str], count: int, **body: Any) -> list[str]:
    ids = []
    for n in range(count):
        response = await router.send(headers, text=f"message {n}", **body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def listed(router: Router, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    response = await router.client.get(LIST, params=query, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids_of(page: dict[str, Any]) -> list[str]:
    return [m["id"] for m in page["data"]]


@pytest.fixture
async def crm(router: Router) -> dict[str, str]:
    """A client "crm" with one sender and an open window to CUSTOMER."""
    await router.sender()
    await router.customer_writes()
    return await router.key(client="crm", scopes=READ_AND_SEND)


async def test_pages_cover_every_message_once_newest_first(
    router: Router, crm: dict[str, str]
) -> None:
    sent = await send_many(router, crm, 7)

    seen: list[str] = []
    pages = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            query["cursor"] = cursor
        page = await listed(router, crm, **query)
        pages.append(len(page["data"]))
        seen.extend(ids_of(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == [3, 3, 1]
    assert seen == list(reversed(sent))
    assert len(set(seen)) == len(seen)


async def test_items_are_the_status_resource_with_history(
    router: Router, crm: dict[str, str]
) -> None:
    [message_id] = await send_many(router, crm, 1, metadata={"ticket": "T-1"})
    await router.wait_for(message_id, crm, "accepted")

    page = await listed(router, crm)
    status = (await router.client.get(f"{LIST}/{message_id}", headers=crm)).json()

    assert page["data"] == [status]
    assert [h["status"] for h in page["data"][0]["history"]] == ["queued", "accepted"]
    assert page["data"][0]["metadata"] == {"ticket": "T-1"}
    assert page["next_cursor"] is None


async def test_a_page_is_two_queries_whatever_its_size(router: Router, crm: dict[str, str]) -> None:
    sent = await send_many(router, crm, 5)
    key = await router.services.keys.authenticate(crm["Authorization"].removeprefix("Bearer "))
    assert key is not None
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    async with router.services.db.read() as conn:
        event.listen(conn.sync_connection, "before_cursor_execute", count)
        page = await listing.list_messages(
            conn,
            client_id=key.client_id,
            filters=listing.MessageFilter(),
            before_id=None,
            limit=5,
        )

    assert [m.id for m in page.messages] == list(reversed(sent))
    assert all(m.history for m in page.messages)
    assert len(statements) == 2, statements


async def test_a_page_exactly_full_says_there_is_no_next_page(
    router: Router, crm: dict[str, str]
) -> None:
    sent = await send_many(router, crm, 2)

    page = await listed(router, crm, limit=2)

    assert ids_of(page) == list(reversed(sent))
    assert page["next_cursor"] is None


async def test_the_default_page_is_20(router: Router, crm: dict[str, str]) -> None:
    sent = await send_many(router, crm, 21)

    first = await listed(router, crm)
    rest = await listed(router, crm, cursor=first["next_cursor"])

    assert ids_of(first) == list(reversed(sent))[:20]
    assert ids_of(rest) == [sent[0]]
    assert rest["next_cursor"] is None


async def test_filter_by_correlation_id(router: Router, crm: dict[str, str]) -> None:
    await send_many(router, crm, 2)
    tagged = await router.send({**crm, "X-Correlation-Id": "crm-order-42"}, text="tagged")
    await send_many(router, crm, 1)

    page = await listed(router, crm, correlation_id="crm-order-42")

    assert ids_of(page) == [tagged.json()["id"]]
    assert page["data"][0]["correlation_id"] == "crm-order-42"
    assert (await listed(router, crm, correlation_id="nobody"))["data"] == []


async def test_filter_by_to_normalises_the_number(router: Router, crm: dict[str, str]) -> None:
    await router.customer_writes(OTHER_CUSTOMER)
    mine = await send_many(router, crm, 2)
    other = await send_many(router, crm, 1, to="+" + OTHER_CUSTOMER)

    assert ids_of(await listed(router, crm, to="+1 (415) 555-2671")) == list(reversed(mine))
    assert ids_of(await listed(router, crm, to="44 7700.900-123")) == other
    assert {m["to"] for m in (await listed(router, crm, to=CUSTOMER))["data"]} == {CUSTOMER}


async def test_filter_by_sender(router: Router, crm: dict[str, str]) -> None:
    await router.sender(OTHER_SENDER)
    await router.customer_writes(sender=OTHER_SENDER)
    first = await send_many(router, crm, 2, sender_id=SENDER)
    second = await send_many(router, crm, 2, sender_id=OTHER_SENDER)

    assert ids_of(await listed(router, crm, sender_id=OTHER_SENDER)) == list(reversed(second))
    assert ids_of(await listed(router, crm, sender_id=SENDER)) == list(reversed(first))
    assert (await listed(router, crm, sender_id="999"))["data"] == []  # unknown: just none


async def test_filter_by_status(router: Router, crm: dict[str, str]) -> None:
    delivered, failed, accepted = await send_many(router, crm, 3)
    wamids = {m: (await router.wait_for(m, crm, "accepted"))["wamid"] for m in (delivered, failed)}
    await router.wait_for(accepted, crm, "accepted")
    assert (await router.status(wamids[delivered], "delivered")).status_code == 200
    failure = [{"code": 131026, "title": "Message undeliverable"}]
    assert (await router.status(wamids[failed], "failed", errors=failure)).status_code == 200
    await router.wait_for(delivered, crm, "delivered")
    await router.wait_for(failed, crm, "failed")

    assert ids_of(await listed(router, crm, status="delivered")) == [delivered]
    assert ids_of(await listed(router, crm, status="failed")) == [failed]
    assert ids_of(await listed(router, crm, status="accepted")) == [accepted]
    assert (await listed(router, crm, status="read"))["data"] == []


async def test_filters_combine_and_paginate(router: Router, crm: dict[str, str]) -> None:
    await router.customer_writes(OTHER_CUSTOMER)
    mine = []
    for _ in range(3):
        mine += await send_many(router, crm, 1)
        await send_many(router, crm, 1, to="+" + OTHER_CUSTOMER)

    first = await listed(router, crm, to=CUSTOMER, sender_id=SENDER, limit=2)
    second = await listed(router, crm, to=CUSTOMER, sender_id=SENDER, cursor=first["next_cursor"])

    assert ids_of(first) + ids_of(second) == list(reversed(mine))
    assert second["next_cursor"] is None


async def test_another_clients_messages_are_never_listed(
    router: Router, crm: dict[str, str]
) -> None:
    erp = await router.key(client="erp", scopes=READ_AND_SEND)
    ours = await send_many(router, crm, 2)
    theirs = await router.send({**erp, "X-Correlation-Id": "erp-batch-7"}, text="theirs")
    assert theirs.status_code == 202

    assert ids_of(await listed(router, crm)) == list(reversed(ours))
    assert (await listed(router, crm, correlation_id="erp-batch-7"))["data"] == []
    assert ids_of(await listed(router, erp)) == [theirs.json()["id"]]
    # A cursor made from the other client's id only positions the page: it reveals nothing.
    foreign = encode_cursor(theirs.json()["id"])
    assert ids_of(await listed(router, crm, cursor=foreign)) == list(reversed(ours))


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "sending"}, "status"),
        ({"status": ""}, "status"),
        ({"to": "not a phone"}, "to"),
        ({"to": "+0123456789"}, "to"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "bm90LWFuLWlk"}, "cursor"),  # base64url of "not-an-id"
        ({"cursor": "x" * 65}, "cursor"),
        ({"correlation_id": "x" * 129}, "correlation_id"),
        ({"correlation_id": "has space"}, "correlation_id"),
        ({"correlation_id": "nul\x00"}, "correlation_id"),
        ({"sender_id": "abc"}, "sender_id"),
    ],
)
async def test_invalid_query_parameters_name_the_param(
    router: Router, crm: dict[str, str], query: dict[str, Any], param: str
) -> None:
    response = await router.client.get(LIST, params=query, headers=crm)

    assert_problem(response, 422, "validation_failed", param)


async def test_a_cursor_must_be_exactly_what_was_handed_out(
    router: Router, crm: dict[str, str]
) -> None:
    await send_many(router, crm, 2)
    cursor = (await listed(router, crm, limit=1))["next_cursor"]
    assert cursor is not None

    for tampered in (cursor + "=", cursor[:-1], cursor.lower()):
        response = await router.client.get(LIST, params={"cursor": tampered}, headers=crm)
        assert_problem(response, 422, "validation_failed", "cursor")


async def test_listing_needs_messages_read(router: Router, crm: dict[str, str]) -> None:
    sender_only = await router.key(client="crm", scopes=[Scope.MESSAGES_SEND])

    assert_problem(await router.client.get(LIST, headers=sender_only), 403, "insufficient_scope")
    assert_problem(await router.client.get(LIST), 401, "invalid_api_key")


async def test_reads_carry_rate_limit_headers(router: Router, crm: dict[str, str]) -> None:
    response = await router.client.get(LIST, headers=crm)

    assert response.status_code == 200
    assert "x-ratelimit-remaining" in response.headers
    assert response.headers["x-correlation-id"]


# --- the service window -----------------------------------------------------------------------


def window_url(to: str = "+" + CUSTOMER) -> str:
    return f"/v1/whatsapp/contacts/{to}/window"


def meta_seconds(at: datetime) -> datetime:
    """What the webhook keeps: Meta's timestamps are whole seconds."""
    return datetime.fromtimestamp(int(at.timestamp()), UTC)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_window_open_after_the_customer_wrote(router: Router) -> None:
    await router.sender()
    headers = await router.key(scopes=[Scope.MESSAGES_READ])
    wrote = meta_seconds(datetime.now(UTC) - timedelta(hours=1))
    await router.customer_writes(at=wrote)

    response = await router.client.get(window_url("+1 415-555-2671"), headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sender_id"] == SENDER
    assert body["wa_id"] == CUSTOMER
    assert body["open"] is True
    assert parse(body["last_inbound_at"]) == wrote
    assert parse(body["closes_at"]) == wrote + timedelta(hours=24)
    assert 23 * 3600 - 60 < body["seconds_remaining"] <= 23 * 3600
    assert "x-ratelimit-limit" in response.headers


async def test_window_closed_after_24_hours(router: Router) -> None:
    await router.sender()
    headers = await router.key(scopes=[Scope.MESSAGES_READ])
    wrote = meta_seconds(datetime.now(UTC) - timedelta(hours=25))
    await router.customer_writes(at=wrote)

    body = (await router.client.get(window_url(), headers=headers)).json()

    assert body["open"] is False
    assert parse(body["last_inbound_at"]) == wrote
    assert parse(body["closes_at"]) == wrote + timedelta(hours=24)
    assert body["seconds_remaining"] == 0


async def test_window_of_a_customer_who_never_wrote(router: Router) -> None:
    await router.sender()
    headers = await router.key(scopes=[Scope.MESSAGES_READ])

    body = (await router.client.get(window_url(), headers=headers)).json()

    assert body == {
        "sender_id": SENDER,
        "wa_id": CUSTOMER,
        "open": False,
        "last_inbound_at": None,
        "closes_at": None,
        "seconds_remaining": 0,
    }


async def test_window_is_per_sender(router: Router) -> None:
    await router.sender()
    await router.sender(OTHER_SENDER)
    headers = await router.key(scopes=[Scope.MESSAGES_READ])
    await router.customer_writes(sender=OTHER_SENDER)

    def url(sender: str) -> str:
        return window_url() + f"?sender_id={sender}"

    assert (await router.client.get(url(OTHER_SENDER), headers=headers)).json()["open"] is True
    assert (await router.client.get(url(SENDER), headers=headers)).json()["open"] is False


async def test_window_sender_rules_are_the_send_routes(router: Router) -> None:
    await router.sender()
    await router.sender(OTHER_SENDER)
    anyone = await router.key(scopes=[Scope.MESSAGES_READ])
    only_first = await router.key(scopes=[Scope.MESSAGES_READ], senders=[SENDER])

    # Two senders registered and the key allows both: the sender must be named.
    assert_problem(
        await router.client.get(window_url(), headers=anyone), 422, "unknown_sender", "sender_id"
    )
    # A key restricted to one sender: inferred, and the other one is refused.
    inferred = await router.client.get(window_url(), headers=only_first)
    assert inferred.status_code == 200
    assert inferred.json()["sender_id"] == SENDER
    assert_problem(
        await router.client.get(window_url() + f"?sender_id={OTHER_SENDER}", headers=only_first),
        403,
        "sender_not_authorized",
        "sender_id",
    )
    assert_problem(
        await router.client.get(window_url() + "?sender_id=999000", headers=anyone),
        422,
        "unknown_sender",
        "sender_id",
    )


@pytest.mark.parametrize("to", ["not-a-phone", "+0123456789", "123", "1" * 16])
async def test_window_of_a_bad_number_names_to(router: Router, to: str) -> None:
    await router.sender()
    headers = await router.key(scopes=[Scope.MESSAGES_READ])

    response = await router.client.get(window_url(to), headers=headers)

    assert_problem(response, 422, "validation_failed", "to")


async def test_window_needs_messages_read(router: Router) -> None:
    await router.sender()
    headers = await router.key(scopes=[Scope.MESSAGES_SEND])

    assert_problem(
        await router.client.get(window_url(), headers=headers), 403, "insufficient_scope"
    )
