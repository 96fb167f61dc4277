"""The Cloud API adapter over a real httpx.AsyncClient on a mock transport (fake the network,
not the client), and the payload builder against the documentation's own examples
(cloud-api.md §1-§3)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from adapters.cloud_api.client import CloudApiClient, GraphHttp
from adapters.cloud_api.errors import CloudApiStatusError, CloudApiUnavailable
from adapters.cloud_api.payloads import message_payload
from domain.content import Button, Buttons, Media, MessageKind, Template, Text
from domain.ports import SendResult
from tests.fakes import FakeGraph, Scripted, meta_error

PNID = "106540352242922"
TOKEN = "EAAG-test-token"
WA_ID = "16505551234"
REF = "msg_01JDQ8Z5W3K9Y2X7V6T4R1P0NM"

# cloud-api.md §1.2: every body starts with this envelope.
ENVELOPE = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+16505551234"}

RE_ENGAGEMENT_DETAILS = (
    "Message failed to send because more than 24 hours have passed since the customer last "
    "replied to this number."
)

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
async def http_for() -> AsyncIterator[Callable[[Handler], GraphHttp]]:
    """Builds AsyncClients on a mock transport, all closed when the test ends."""
    made: list[GraphHttp] = []

    def make(handler: Handler) -> GraphHttp:
        client = GraphHttp(transport=httpx.MockTransport(handler), base_url="https://graph.example")
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def api(http: GraphHttp) -> CloudApiClient:
    return CloudApiClient(http, token=TOKEN, version="v25.0")


def answer(status: int, content: bytes, content_type: str = "application/json") -> Handler:
    """A Graph API that always gives this exact answer."""

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers={"Content-Type": content_type})

    return handler


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("scripted", request=request)

    return handler


async def send_and_fail(http: GraphHttp) -> CloudApiStatusError:
    with pytest.raises(CloudApiStatusError) as caught:
        await api(http).send(PNID, {"to": "+" + WA_ID})
    return caught.value


# --- the request ------------------------------------------------------------------------------


async def test_send_posts_the_payload_to_the_versioned_messages_path(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    graph = FakeGraph()
    payload = message_payload(
        Text(body="Does it come in another color?"), wa_id=WA_ID, reply_to=None, callback_data=REF
    )

    result = await api(http_for(graph.handler)).send(PNID, payload)

    assert result == SendResult(
        wamid="wamid.FAKE000000", wa_id="16505551234", message_status="accepted"
    )
    [sent] = graph.requests
    assert sent.path == f"/v25.0/{PNID}/messages"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body == payload


async def test_send_reads_the_documented_success_response(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    # cloud-api.md §2, byte for byte.
    body = (
        b'{"messaging_product":"whatsapp",'
        b'"contacts":[{"input":"+16505551234","wa_id":"16505551234"}],'
        b'"messages":[{"id":"wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA",'
        b'"message_status":"accepted"}]}'
    )
    result = await api(http_for(answer(200, body))).send(PNID, {"to": "+16505551234"})
    assert result == SendResult(
        wamid="wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA",
        wa_id="16505551234",
        message_status="accepted",
    )


async def test_success_without_contacts_or_message_status(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    body = b'{"messaging_product":"whatsapp","messages":[{"id":"wamid.X1"}],"extra":1}'
    result = await api(http_for(answer(200, body))).send(PNID, {"to": "+16505551234"})
    assert result == SendResult(wamid="wamid.X1", wa_id=None, message_status=None)


# --- payloads (cloud-api.md §1) ---------------------------------------------------------------


def test_text_payload_is_the_documented_example() -> None:
    payload = message_payload(
        Text(body="Here is the link: https://example.com/x", preview_url=True),
        wa_id=WA_ID,
        reply_to=None,
        callback_data=REF,
    )
    # §1.3, plus our id in biz_opaque_callback_data (§1.2).
    assert payload == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+16505551234",
        "biz_opaque_callback_data": REF,
        "type": "text",
        "text": {"preview_url": True, "body": "Here is the link: https://example.com/x"},
    }


def test_text_payload_without_preview() -> None:
    payload = message_payload(Text(body="Hi"), wa_id=WA_ID, reply_to=None, callback_data=REF)
    assert payload["text"] == {"preview_url": False, "body": "Hi"}


def test_reply_buttons_payload_is_the_documented_example() -> None:
    content = Buttons(
        header="Workshop details",
        body="Your workshop is at 9am tomorrow. Reschedule?",
        footer="Lucky Shrub",
        buttons=(
            Button(id="change-button", title="Change"),
            Button(id="cancel-button", title="Cancel"),
        ),
    )
    payload = message_payload(content, wa_id=WA_ID, reply_to=None, callback_data=REF)
    # §1.4
    assert payload == {
        **ENVELOPE,
        "biz_opaque_callback_data": REF,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "header": {"type": "text", "text": "Workshop details"},
            "body": {"text": "Your workshop is at 9am tomorrow. Reschedule?"},
            "footer": {"text": "Lucky Shrub"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "change-button", "title": "Change"}},
                    {"type": "reply", "reply": {"id": "cancel-button", "title": "Cancel"}},
                ]
            },
        },
    }


def test_reply_buttons_without_header_and_footer() -> None:
    content = Buttons(body="Reschedule?", buttons=(Button(id="yes", title="Yes"),))
    payload = message_payload(content, wa_id=WA_ID, reply_to=None, callback_data=REF)
    assert payload["interactive"] == {
        "type": "button",
        "body": {"text": "Reschedule?"},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]},
    }


@pytest.mark.parametrize(
    ("content", "documented"),
    [
        # §1.7, one line per kind (audio's optional "voice" flag is not something we send).
        (
            Media(kind=MessageKind.IMAGE, url="https://ex.com/a.png", caption="optional"),
            {"type": "image", "image": {"link": "https://ex.com/a.png", "caption": "optional"}},
        ),
        (
            Media(
                kind=MessageKind.DOCUMENT,
                url="https://ex.com/inv.pdf",
                filename="invoice.pdf",
                caption="optional",
            ),
            {
                "type": "document",
                "document": {
                    "link": "https://ex.com/inv.pdf",
                    "filename": "invoice.pdf",
                    "caption": "optional",
                },
            },
        ),
        (
            Media(kind=MessageKind.AUDIO, url="https://ex.com/a.ogg"),
            {"type": "audio", "audio": {"link": "https://ex.com/a.ogg"}},
        ),
        (
            Media(kind=MessageKind.VIDEO, url="https://ex.com/v.mp4", caption="optional"),
            {"type": "video", "video": {"link": "https://ex.com/v.mp4", "caption": "optional"}},
        ),
        (
            Media(kind=MessageKind.STICKER, url="https://ex.com/s.webp"),
            {"type": "sticker", "sticker": {"link": "https://ex.com/s.webp"}},
        ),
        (
            Media(kind=MessageKind.DOCUMENT, url="https://ex.com/inv.pdf"),
            {"type": "document", "document": {"link": "https://ex.com/inv.pdf"}},
        ),
    ],
    ids=["image", "document", "audio", "video", "sticker", "document-bare"],
)
def test_media_payloads_are_the_documented_examples(
    content: Media, documented: dict[str, Any]
) -> None:
    payload = message_payload(content, wa_id=WA_ID, reply_to=None, callback_data=REF)
    assert payload == {**ENVELOPE, "biz_opaque_callback_data": REF, **documented}


def test_template_payload_passes_components_through() -> None:
    components = (
        {
            "type": "header",
            "parameters": [{"type": "image", "image": {"link": "https://ex.com/banner.png"}}],
        },
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Jessica"},
                {"type": "text", "text": "SKBUP2-4CPIG9"},
            ],
        },
        {
            "type": "button",
            "sub_type": "url",
            "index": "0",
            "parameters": [{"type": "text", "text": "SKBUP2-4CPIG9"}],
        },
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "1",
            "parameters": [{"type": "payload", "payload": "STOP_PROMOS"}],
        },
    )
    content = Template(name="order_update", language="en_US", components=components)
    payload = message_payload(content, wa_id=WA_ID, reply_to=None, callback_data=REF)
    # §1.6
    assert payload == {
        **ENVELOPE,
        "biz_opaque_callback_data": REF,
        "type": "template",
        "template": {
            "name": "order_update",
            "language": {"code": "en_US"},
            "components": list(components),
        },
    }


def test_template_without_components_has_no_components_key() -> None:
    content = Template(name="hello_world", language="en")
    payload = message_payload(content, wa_id=WA_ID, reply_to=None, callback_data=REF)
    assert payload["template"] == {"name": "hello_world", "language": {"code": "en"}}


def test_reply_context_and_callback_data() -> None:
    quoted = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    payload = message_payload(Text(body="Yes!"), wa_id=WA_ID, reply_to=quoted, callback_data=REF)
    # §1.2 and §1.9
    assert payload == {
        **ENVELOPE,
        "context": {"message_id": quoted},
        "biz_opaque_callback_data": REF,
        "type": "text",
        "text": {"preview_url": False, "body": "Yes!"},
    }


@pytest.mark.parametrize("wa_id", ["16505551234", "5511987654321", "447700900123"])
def test_to_is_always_plus_and_the_digits(wa_id: str) -> None:
    # Without the "+", Meta prepends the business number's own country code (cloud-api.md §8).
    payload = message_payload(Text(body="Hi"), wa_id=wa_id, reply_to=None, callback_data=REF)
    assert payload["to"] == "+" + wa_id


# --- errors (cloud-api.md §3) -----------------------------------------------------------------


async def test_meta_error_body_becomes_a_status_error(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    graph = FakeGraph().then(
        meta_error(400, 131047, "Re-engagement message", RE_ENGAGEMENT_DETAILS)
    )

    error = await send_and_fail(http_for(graph.handler))

    assert error.http_status == 400
    assert error.code == 131047
    assert error.title == "Re-engagement message"
    assert error.details == RE_ENGAGEMENT_DETAILS
    assert error.fbtrace_id == "FAKETRACE1"


async def test_the_documented_error_shape(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    # §3.1 byte for byte, plus fields Graph may add: unknown fields never break decoding.
    body = (
        b'{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException",'
        b'"code":131047,"error_data":{"messaging_product":"whatsapp","details":"Message failed '
        b"to send because more than 24 hours have passed since the customer last replied to "
        b'this number."},"error_subcode":2494055,"fbtrace_id":"Az8or2yhqkZfEZ-_4Qn_Bam",'
        b'"is_transient":false,"error_user_msg":"x"}}'
    )

    error = await send_and_fail(http_for(answer(400, body)))

    assert (error.http_status, error.code, error.title) == (400, 131047, "Re-engagement message")
    assert error.details == RE_ENGAGEMENT_DETAILS
    assert error.fbtrace_id == "Az8or2yhqkZfEZ-_4Qn_Bam"
    assert error.is_transient is False


async def test_title_without_a_code_prefix_is_kept_whole(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    body = b'{"error":{"message":"Invalid OAuth access token.","code":190,"fbtrace_id":"T"}}'
    error = await send_and_fail(http_for(answer(401, body)))
    assert (error.http_status, error.code, error.title) == (401, 190, "Invalid OAuth access token.")
    assert error.details is None


async def test_empty_message_falls_back_to_the_user_title(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    body = b'{"error":{"code":131000,"error_user_title":"Something went wrong"}}'
    error = await send_and_fail(http_for(answer(500, body)))
    assert (error.http_status, error.code, error.title) == (500, 131000, "Something went wrong")


@pytest.mark.parametrize(
    ("status", "content", "title"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", "Bad Gateway"),
        (503, b"", "Service Unavailable"),
        (400, b'{"not_an_error": true}', "Bad Request"),
        (500, b'{"error": "a string, not an object"}', "Internal Server Error"),
    ],
    ids=["html", "empty", "no-error-key", "error-not-object"],
)
async def test_unreadable_error_bodies_keep_the_http_status(
    http_for: Callable[[Handler], GraphHttp], status: int, content: bytes, title: str
) -> None:
    error = await send_and_fail(http_for(answer(status, content, "text/html")))
    assert (error.http_status, error.code, error.title) == (status, None, title)
    assert (error.details, error.fbtrace_id) == (None, None)


@pytest.mark.parametrize(
    "content",
    [b"<html>OK</html>", b"", b'{"messages": []}', b'{"messaging_product":"whatsapp"}'],
    ids=["html", "empty", "no-messages", "missing-messages"],
)
async def test_a_200_with_an_unreadable_body_is_a_status_error(
    http_for: Callable[[Handler], GraphHttp], content: bytes
) -> None:
    error = await send_and_fail(http_for(answer(200, content)))
    assert (error.http_status, error.code) == (200, None)


# --- the network failed -----------------------------------------------------------------------


async def test_a_read_timeout_may_have_sent_the_message(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    graph = FakeGraph().then(Scripted(kind="timeout"))
    with pytest.raises(CloudApiUnavailable) as caught:
        await api(http_for(graph.handler)).send(PNID, {"to": "+" + WA_ID})
    assert caught.value.maybe_sent is True
    assert len(graph.requests) == 1


async def test_a_refused_connection_did_not_send_it(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    graph = FakeGraph().then(Scripted(kind="reset"))
    with pytest.raises(CloudApiUnavailable) as caught:
        await api(http_for(graph.handler)).send(PNID, {"to": "+" + WA_ID})
    assert caught.value.maybe_sent is False


@pytest.mark.parametrize(
    ("exc_type", "maybe_sent"),
    [
        (httpx.ConnectTimeout, False),
        (httpx.PoolTimeout, False),
        (httpx.WriteTimeout, True),
        (httpx.RemoteProtocolError, True),
        (httpx.ReadError, True),
    ],
)
async def test_other_transport_failures(
    http_for: Callable[[Handler], GraphHttp],
    exc_type: type[httpx.TransportError],
    maybe_sent: bool,
) -> None:
    with pytest.raises(CloudApiUnavailable) as caught:
        await api(http_for(raising(exc_type))).send(PNID, {"to": "+" + WA_ID})
    assert caught.value.maybe_sent is maybe_sent
    assert isinstance(caught.value.__cause__, exc_type)


async def test_scripted_answers_then_success(
    http_for: Callable[[Handler], GraphHttp],
) -> None:
    """The adapter retries nothing itself: retries are the dispatcher's policy."""
    graph = FakeGraph().then(meta_error(400, 130429, "Rate limit hit"))
    client = api(http_for(graph.handler))

    with pytest.raises(CloudApiStatusError):
        await client.send(PNID, {"to": "+" + WA_ID})
    assert len(graph.requests) == 1
    result = await client.send(PNID, {"to": "+" + WA_ID})
    assert result.wamid == "wamid.FAKE000000"
    assert len(graph.requests) == 2
