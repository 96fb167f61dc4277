"""Meta's webhooks at the edge: the signature over the raw bytes, then tolerant decoding of
the documentation's own examples (cloud-api.md §4.2, §4.4, §4.6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from adapters.cloud_api.webhooks import (
    Contact,
    ErrorData,
    InboundMessage,
    Metadata,
    Status,
    WebhookError,
    decoder,
    meta_time,
    sign,
    signature_valid,
)

SECRET = "app-secret"
BODY = b'{"object":"whatsapp_business_account","entry":[]}'
# HMAC-SHA256(BODY, "app-secret"), computed once outside the code under test.
BODY_SIGNATURE = "sha256=d3e4f9da0ce6c71ab3dba55929b8eeeee2455349e534924ead19f98d143e904f"

# §4.4, with the optional extras the section lists (identity_key_hash, context, referral).
INBOUND_TEXT = b"""{"object":"whatsapp_business_account",
 "entry":[{"id":"102290129340398",
   "changes":[{"field":"messages","value":{
     "messaging_product":"whatsapp",
     "metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
     "contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234",
       "user_id":"US.13491208655302741918","identity_key_hash":"Zm9vYmFy"}],
     "messages":[{"from":"16505551234",
       "id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
       "timestamp":"1749416383","type":"text","text":{"body":"Does it come in another color?"},
       "context":{"forwarded":true},
       "referral":{"source_id":"120201","ctwa_clid":"ARAkLkA8","source_type":"ad"}}]}}]}]}"""

# §4.6 byte for byte (conversation and pricing are fields we do not model).
STATUS_SENT = b"""{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
  "messaging_product":"whatsapp",
  "metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
  "statuses":[{"id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA",
    "status":"sent","timestamp":"1750030073","recipient_id":"16505551234",
    "biz_opaque_callback_data":"my-ref-123",
    "conversation":{"id":"72b14d6bd5407799e66f64d1b338e567","expiration_timestamp":"1750116480","origin":{"type":"marketing"}},
    "pricing":{"billable":true,"pricing_model":"PMP","type":"regular","category":"marketing"}}]}}]}]}"""  # noqa: E501 - Meta's example, kept whole

# §4.6 "failed comes with errors[]", with the BSUID rollout's recipient_user_id (§8.3).
STATUS_FAILED = b"""{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
  "messaging_product":"whatsapp",
  "metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
  "statuses":[{"id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA",
    "status":"failed","timestamp":"1750030099","recipient_id":"16505551234",
    "recipient_user_id":"US.13491208655302741918",
    "biz_opaque_callback_data":"msg_01JDQ8Z5W3K9Y2X7V6T4R1P0NM",
    "errors":[{"code":131049,
      "title":"This message was not delivered to maintain healthy ecosystem engagement.",
      "message":"This message was not delivered to maintain healthy ecosystem engagement.",
      "error_data":{"details":"In order to maintain a healthy ecosystem engagement, the message failed to be delivered."},
      "href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}]}}]}]}"""  # noqa: E501 - Meta's example, kept whole

# §4.6: system or account errors arrive as value.errors[].
SYSTEM_ERROR = b"""{"object":"whatsapp_business_account",
  "entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp",
    "metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
    "errors":[{"code":130429,"title":"Rate limit hit","message":"(#130429) Rate limit hit",
      "error_data":{"details":"Cloud API message throughput has been reached."},
      "href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}}]}]}"""


# --- signature (§4.2) -------------------------------------------------------------------------


def test_sign_is_hmac_sha256_of_the_raw_body_with_the_prefix() -> None:
    assert sign(BODY, SECRET) == BODY_SIGNATURE


def test_a_valid_signature_is_accepted() -> None:
    assert signature_valid(BODY, BODY_SIGNATURE, SECRET)
    assert signature_valid(INBOUND_TEXT, sign(INBOUND_TEXT, SECRET), SECRET)


@pytest.mark.parametrize(
    ("body", "header", "secret"),
    [
        (BODY, BODY_SIGNATURE, "another-secret"),
        (BODY, BODY_SIGNATURE.removeprefix("sha256="), SECRET),
        (BODY, "sha1=" + BODY_SIGNATURE.removeprefix("sha256="), SECRET),
        (BODY.replace(b"[]", b"[ ]"), BODY_SIGNATURE, SECRET),
        (BODY + b"\n", BODY_SIGNATURE, SECRET),
        (BODY, None, SECRET),
        (BODY, "", SECRET),
        (BODY, "sha256=", SECRET),
        (BODY, BODY_SIGNATURE[:-1], SECRET),
    ],
    ids=[
        "wrong-secret",
        "missing-prefix",
        "sha1-prefix",
        "tampered-body",
        "trailing-newline",
        "no-header",
        "empty-header",
        "prefix-only",
        "truncated",
    ],
)
def test_an_invalid_signature_is_refused(body: bytes, header: str | None, secret: str) -> None:
    assert not signature_valid(body, header, secret)


# --- decoding (§4.4, §4.6) --------------------------------------------------------------------


def test_inbound_text_message() -> None:
    payload = decoder.decode(INBOUND_TEXT)

    assert payload.object == "whatsapp_business_account"
    [entry] = payload.entry
    assert entry.id == "102290129340398"
    [change] = entry.changes
    assert change.field == "messages"
    value = change.value
    assert value is not None
    assert value.messaging_product == "whatsapp"
    assert value.metadata == Metadata(
        phone_number_id="106540352242922", display_phone_number="15550783881"
    )
    assert value.contacts == [Contact(wa_id="16505551234", user_id="US.13491208655302741918")]
    assert value.messages == [
        InboundMessage(
            id="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            timestamp="1749416383",
            type="text",
            from_="16505551234",
            from_user_id=None,
        )
    ]
    assert (value.statuses, value.errors) == ([], [])


def test_inbound_message_from_a_user_who_hides_their_number() -> None:
    # §8.3: a username user may arrive with a BSUID and no phone number.
    body = b"""{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":
      "messages","value":{"metadata":{"phone_number_id":"106540352242922"},
      "contacts":[{"profile":{"name":"X"},"user_id":"US.1349"}],
      "messages":[{"from_user_id":"US.1349","id":"wamid.B1","timestamp":"1749416383",
        "type":"text","text":{"body":"hi"}}]}}]}]}"""
    value = decoder.decode(body).entry[0].changes[0].value
    assert value is not None
    assert value.contacts == [Contact(wa_id=None, user_id="US.1349")]
    [message] = value.messages
    assert (message.from_, message.from_user_id) == (None, "US.1349")


def test_status_with_callback_data_and_unknown_fields() -> None:
    value = decoder.decode(STATUS_SENT).entry[0].changes[0].value

    assert value is not None
    assert value.metadata is not None
    assert value.metadata.phone_number_id == "106540352242922"
    assert value.statuses == [
        Status(
            id="wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA",
            status="sent",
            timestamp="1750030073",
            recipient_id="16505551234",
            biz_opaque_callback_data="my-ref-123",
            errors=[],
        )
    ]
    assert value.messages == []


def test_failed_status_carries_meta_errors() -> None:
    value = decoder.decode(STATUS_FAILED).entry[0].changes[0].value

    assert value is not None
    [status] = value.statuses
    assert (status.status, status.timestamp, status.recipient_id) == (
        "failed",
        "1750030099",
        "16505551234",
    )
    assert status.biz_opaque_callback_data == "msg_01JDQ8Z5W3K9Y2X7V6T4R1P0NM"
    title = "This message was not delivered to maintain healthy ecosystem engagement."
    assert status.errors == [
        WebhookError(
            code=131049,
            title=title,
            message=title,
            error_data=ErrorData(
                details="In order to maintain a healthy ecosystem engagement, the message "
                "failed to be delivered."
            ),
        )
    ]


def test_system_errors_in_the_value() -> None:
    value = decoder.decode(SYSTEM_ERROR).entry[0].changes[0].value
    assert value is not None
    assert value.errors == [
        WebhookError(
            code=130429,
            title="Rate limit hit",
            message="(#130429) Rate limit hit",
            error_data=ErrorData(details="Cloud API message throughput has been reached."),
        )
    ]
    assert (value.messages, value.statuses) == ([], [])


def test_a_batch_keeps_every_entry_change_and_status() -> None:
    body = b"""{"object":"whatsapp_business_account","entry":[
      {"id":"W1","changes":[
        {"field":"messages","value":{"statuses":[
          {"id":"wamid.1","status":"delivered","timestamp":"1750030080"},
          {"id":"wamid.2","status":"read","timestamp":"1750030081"}]}},
        {"field":"message_template_status_update","value":{"event":"APPROVED"}}]},
      {"id":"W2","changes":[
        {"field":"messages","value":{"statuses":[
          {"id":"wamid.3","status":"played","timestamp":"1750030082"}]}}]}]}"""
    payload = decoder.decode(body)

    assert [entry.id for entry in payload.entry] == ["W1", "W2"]
    assert [change.field for change in payload.entry[0].changes] == [
        "messages",
        "message_template_status_update",
    ]
    statuses = [
        (status.id, status.status)
        for entry in payload.entry
        for change in entry.changes
        if change.value is not None
        for status in change.value.statuses
    ]
    assert statuses == [("wamid.1", "delivered"), ("wamid.2", "read"), ("wamid.3", "played")]


def test_malformed_bodies_raise_msgspec_errors() -> None:
    with pytest.raises(msgspec.DecodeError):
        decoder.decode(b"{not json")
    with pytest.raises(msgspec.ValidationError):
        # A status without its wamid cannot be applied to anything.
        decoder.decode(
            b'{"entry":[{"changes":[{"value":{"statuses":[{"status":"sent","timestamp":"1"}]}}]}]}'
        )


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("1749416383", datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)),
        ("1750030073", datetime(2025, 6, 15, 23, 27, 53, tzinfo=UTC)),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_meta_time_is_aware_utc(timestamp: str, expected: datetime) -> None:
    converted = meta_time(timestamp)
    assert converted == expected
    assert converted.tzinfo is not None
    assert converted.utcoffset() == timedelta(0)
