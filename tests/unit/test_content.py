"""Message content against the Cloud API's limits (API.md "POST /v1/whatsapp/messages",
cloud-api.md §1). Every refusal names the field the client must fix (``ContentError.param``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from domain.content import (
    Button,
    Buttons,
    ButtonSpec,
    ContentError,
    Media,
    MediaSpec,
    MessageKind,
    Template,
    Text,
    free_form,
    metadata,
    reply_to,
    summary,
    template,
)

IMAGE_URL = "https://example.com/a.png"
WAMID = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA"


def refused(build: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    """Build, expect a ContentError, and return the field it names."""
    with pytest.raises(ContentError) as caught:
        build(*args, **kwargs)
    assert caught.value.detail
    assert str(caught.value).startswith(caught.value.param + ": ")
    return caught.value.param


def buttons_of(*titles: str) -> list[ButtonSpec]:
    return [ButtonSpec(id=f"id-{i}", title=title) for i, title in enumerate(titles)]


def media(kind: str = "image", url: str = IMAGE_URL, **kwargs: str | None) -> MediaSpec:
    return MediaSpec(kind=kind, url=url, **kwargs)


# --- text ------------------------------------------------------------------------------------


def test_text_up_to_4096_characters() -> None:
    assert free_form(text="a" * 4096) == Text(body="a" * 4096, preview_url=False)
    assert refused(free_form, text="a" * 4097) == "text"


def test_text_length_counts_characters_not_bytes() -> None:
    assert free_form(text="é" * 4096) == Text(body="é" * 4096)


@pytest.mark.parametrize("text", ["", " ", "\n\t "])
def test_text_must_not_be_empty_or_blank(text: str) -> None:
    assert refused(free_form, text=text) == "text"


def test_text_is_required_without_media() -> None:
    assert refused(free_form, text=None) == "text"


@pytest.mark.parametrize(("given", "stored"), [(None, False), (False, False), (True, True)])
def test_preview_url_applies_to_text(given: bool | None, stored: bool) -> None:
    message = free_form(text="see https://example.com", preview_url=given)
    assert message == Text(body="see https://example.com", preview_url=stored)
    assert message.kind is MessageKind.TEXT


# --- reply buttons -----------------------------------------------------------------------------


def test_a_message_with_buttons_is_interactive() -> None:
    message = free_form(
        text="Reschedule?", header="Workshop", footer="Lucky Shrub", buttons=buttons_of("Yes", "No")
    )
    assert message == Buttons(
        body="Reschedule?",
        header="Workshop",
        footer="Lucky Shrub",
        buttons=(Button(id="id-0", title="Yes"), Button(id="id-1", title="No")),
    )
    assert message.kind is MessageKind.INTERACTIVE


def test_interactive_body_up_to_1024_characters() -> None:
    assert isinstance(free_form(text="a" * 1024, buttons=buttons_of("Ok")), Buttons)
    assert refused(free_form, text="a" * 1025, buttons=buttons_of("Ok")) == "text"


@pytest.mark.parametrize("text", [None, "", "   "])
def test_interactive_body_is_required(text: str | None) -> None:
    assert refused(free_form, text=text, buttons=buttons_of("Ok")) == "text"


@pytest.mark.parametrize("field", ["header", "footer"])
def test_header_and_footer_up_to_60_characters(field: str) -> None:
    ok = free_form(text="Body", buttons=buttons_of("Ok"), **{field: "h" * 60})
    assert getattr(ok, field) == "h" * 60
    assert refused(free_form, text="Body", buttons=buttons_of("Ok"), **{field: "h" * 61}) == field
    assert refused(free_form, text="Body", buttons=buttons_of("Ok"), **{field: ""}) == field


@pytest.mark.parametrize("count", [1, 2, 3])
def test_one_to_three_buttons(count: int) -> None:
    titles = [f"Option {i}" for i in range(count)]
    message = free_form(text="Pick one", buttons=buttons_of(*titles))
    assert isinstance(message, Buttons)
    assert [b.title for b in message.buttons] == titles


def test_four_buttons_are_too_many() -> None:
    assert refused(free_form, text="Pick one", buttons=buttons_of("A", "B", "C", "D")) == "buttons"


def test_an_empty_button_list_is_refused() -> None:
    assert refused(free_form, text="Pick one", buttons=[]) == "buttons"


@pytest.mark.parametrize("field", ["header", "footer"])
def test_header_or_footer_without_buttons_is_refused(field: str) -> None:
    assert refused(free_form, text="Body", **{field: "Hello"}) == "buttons"


def test_button_titles_up_to_20_characters() -> None:
    message = free_form(text="Pick", buttons=buttons_of("Ok", "t" * 20))
    assert isinstance(message, Buttons)
    assert message.buttons[1].title == "t" * 20
    assert refused(free_form, text="Pick", buttons=buttons_of("Ok", "t" * 21)) == "buttons[1].title"
    assert refused(free_form, text="Pick", buttons=buttons_of("Ok", "")) == "buttons[1].title"


def test_button_ids_of_1_to_256_characters() -> None:
    def one(button_id: str) -> object:
        return free_form(text="Pick", buttons=[ButtonSpec(id=button_id, title="Ok")])

    assert isinstance(one("i" * 256), Buttons)
    assert isinstance(one("i"), Buttons)
    assert refused(one, "i" * 257) == "buttons[0].id"
    assert refused(one, "") == "buttons[0].id"


def test_button_ids_are_unique() -> None:
    buttons = [
        ButtonSpec(id="a", title="One"),
        ButtonSpec(id="b", title="Two"),
        ButtonSpec(id="a", title="Three"),
    ]
    assert refused(free_form, text="Pick", buttons=buttons) == "buttons[2].id"


def test_button_titles_are_unique() -> None:
    buttons = [ButtonSpec(id="a", title="Same"), ButtonSpec(id="b", title="Same")]
    assert refused(free_form, text="Pick", buttons=buttons) == "buttons[1].title"


def test_preview_url_does_not_apply_to_buttons() -> None:
    assert refused(free_form, text="Pick", buttons=buttons_of("Ok"), preview_url=True) == (
        "preview_url"
    )


def test_preview_url_false_is_harmless_with_buttons() -> None:
    assert free_form(text="Pick", buttons=buttons_of("Ok"), preview_url=False).kind == (
        MessageKind.INTERACTIVE
    )


# --- media -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["image", "video", "audio", "document", "sticker"])
def test_every_media_kind_is_sent_by_https_link(kind: str) -> None:
    assert free_form(text=None, media=media(kind)) == Media(kind=MessageKind(kind), url=IMAGE_URL)


@pytest.mark.parametrize("kind", ["text", "interactive", "template", "gif", "location", ""])
def test_other_media_kinds_are_refused(kind: str) -> None:
    assert refused(free_form, text=None, media=media(kind)) == "media.kind"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.png",
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "example.com/a.png",
        "//example.com/a.png",
        "https://",
        "https:///a.png",
        "https://exa mple.com/a.png",
        "https://example.com/a b.png",
        "https://example.com/a.png ",
        "https://example.com/a.png\n",
        "",
    ],
)
def test_media_urls_must_be_https_with_a_host(url: str) -> None:
    assert refused(free_form, text=None, media=media(url=url)) == "media.url"


@pytest.mark.parametrize(
    "url",
    [
        "https://[::1",  # unclosed IPv6 literal: urlsplit raises ValueError
        "https://exa\uff03mple.com/a.png",  # fails urlsplit's NFKC check: ValueError
    ],
)
def test_malformed_media_urls_are_a_content_error_not_a_crash(url: str) -> None:
    """The HTTP layer turns ContentError into 422; any other ValueError would be a 500."""
    assert refused(free_form, text=None, media=media(url=url)) == "media.url"


def test_media_url_up_to_2048_characters() -> None:
    prefix = "https://example.com/"
    longest = prefix + "a" * (2048 - len(prefix))
    assert free_form(text=None, media=media(url=longest)) == Media(
        kind=MessageKind.IMAGE, url=longest
    )
    assert refused(free_form, text=None, media=media(url=longest + "a")) == "media.url"


@pytest.mark.parametrize("kind", ["image", "video", "document"])
def test_text_becomes_the_caption_where_the_kind_takes_one(kind: str) -> None:
    message = free_form(text="Your invoice", media=media(kind))
    assert message == Media(kind=MessageKind(kind), url=IMAGE_URL, caption="Your invoice")


def test_the_caption_may_come_as_media_caption() -> None:
    message = free_form(text=None, media=media(caption="Look"))
    assert isinstance(message, Media)
    assert message.caption == "Look"


def test_the_caption_may_not_come_twice() -> None:
    assert refused(free_form, text="One", media=media(caption="Two")) == "media.caption"


@pytest.mark.parametrize("kind", ["audio", "sticker"])
def test_audio_and_stickers_take_no_caption(kind: str) -> None:
    assert refused(free_form, text="Listen", media=media(kind)) == "text"
    assert refused(free_form, text=None, media=media(kind, caption="Listen")) == "media.caption"


def test_caption_up_to_1024_characters_named_where_it_came_from() -> None:
    assert isinstance(free_form(text="c" * 1024, media=media()), Media)
    assert isinstance(free_form(text=None, media=media(caption="c" * 1024)), Media)
    assert refused(free_form, text="c" * 1025, media=media()) == "text"
    assert refused(free_form, text=None, media=media(caption="c" * 1025)) == "media.caption"


def test_an_empty_caption_is_refused() -> None:
    assert refused(free_form, text="", media=media()) == "text"
    assert refused(free_form, text=None, media=media(caption=" ")) == "media.caption"


def test_filename_for_documents_up_to_240_characters() -> None:
    name = "f" * 236 + ".pdf"
    message = free_form(text=None, media=media("document", filename=name))
    assert isinstance(message, Media)
    assert message.filename == name
    too_long = media("document", filename="f" * 237 + ".pdf")
    assert refused(free_form, text=None, media=too_long) == "media.filename"
    assert refused(free_form, text=None, media=media("document", filename="")) == "media.filename"


@pytest.mark.parametrize("kind", ["image", "video", "audio", "sticker"])
def test_filename_only_for_documents(kind: str) -> None:
    spec = media(kind, filename="a.pdf")
    assert refused(free_form, text=None, media=spec) == "media.filename"


@pytest.mark.parametrize(
    "extra",
    [{"header": "Hi"}, {"footer": "Bye"}, {"buttons": [ButtonSpec(id="a", title="A")]}],
)
def test_media_does_not_combine_with_reply_buttons(extra: dict[str, Any]) -> None:
    assert refused(free_form, text="Body", media=media(), **extra) == "media"


def test_preview_url_does_not_apply_to_media() -> None:
    assert refused(free_form, text=None, media=media(), preview_url=True) == "preview_url"
    assert free_form(text=None, media=media(), preview_url=False) == Media(
        kind=MessageKind.IMAGE, url=IMAGE_URL
    )


# --- reply_to --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wamid",
    [WAMID, "wamid.ID", "wamid.a+b/c=_-.", "wamid." + "A" * 506],  # the last is 512 characters
)
def test_reply_to_takes_a_wamid(wamid: str) -> None:
    assert reply_to(wamid) == wamid


@pytest.mark.parametrize(
    "wamid",
    [
        "",
        "wamid.",
        "WAMID.HBgL",
        "HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA",
        "msg_01HX",
        "wamid.HB gL",
        "wamid.HBgL\n",
        " wamid.HBgL",
        "wamid." + "A" * 507,  # 513 characters
    ],
)
def test_reply_to_refuses_anything_else(wamid: str) -> None:
    assert refused(reply_to, wamid) == "reply_to"


# --- metadata --------------------------------------------------------------------------------


def encoded_size(values: Mapping[str, str]) -> int:
    return len(json.dumps(dict(values), ensure_ascii=False, separators=(",", ":")).encode())


def test_metadata_is_a_plain_copy() -> None:
    given = {"ticket": "T-991"}
    kept = metadata(given)
    assert kept == given
    assert kept is not given
    assert metadata({}) == {}


def test_metadata_up_to_16_keys() -> None:
    sixteen = {f"k{i}": "v" for i in range(16)}
    assert metadata(sixteen) == sixteen
    assert refused(metadata, {**sixteen, "k16": "v"}) == "metadata"


def test_metadata_keys_must_not_be_empty() -> None:
    assert refused(metadata, {"": "v"}) == "metadata"


def test_metadata_up_to_2048_bytes_encoded() -> None:
    largest = {"k": "a" * 2040}  # {"k":"aaa…"} is 8 + 2040 bytes
    assert encoded_size(largest) == 2048
    assert metadata(largest) == largest
    assert refused(metadata, {"k": "a" * 2041}) == "metadata"


def test_metadata_size_counts_utf8_bytes_not_characters() -> None:
    fits = {"k": "é" * 1020}  # 8 + 2040 bytes, 1028 characters
    assert encoded_size(fits) == 2048
    assert metadata(fits) == fits
    assert refused(metadata, {"k": "é" * 1021}) == "metadata"  # 2050 bytes, 1029 characters


# --- templates -------------------------------------------------------------------------------

BODY = {"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}


def test_a_template_passes_components_through() -> None:
    components: Sequence[Mapping[str, Any]] = [BODY]
    built = template(name="order_shipped", language="en_US", components=components)
    assert built == Template(name="order_shipped", language="en_US", components=(BODY,))
    assert built.kind is MessageKind.TEMPLATE


@pytest.mark.parametrize("name", ["order_shipped", "a", "hello_world_2", "x" * 512])
def test_template_names_lowercase_digits_underscore_up_to_512(name: str) -> None:
    assert template(name=name, language="en", components=[]).name == name


@pytest.mark.parametrize(
    "name", ["", "Order_Shipped", "order-shipped", "order shipped", "order_shipped\n", "x" * 513]
)
def test_other_template_names_are_refused(name: str) -> None:
    assert refused(template, name=name, language="en", components=[]) == "template.name"


@pytest.mark.parametrize("language", ["en", "en_US", "pt_BR", "zh_HK", "fil", "es_LA", "sr_Latn"])
def test_template_languages(language: str) -> None:
    assert template(name="hi", language=language, components=[]).language == language


@pytest.mark.parametrize(
    "language", ["", "e", "EN", "en-US", "english", "en_", "en_U", "en_USAXY", "en_US\n"]
)
def test_other_template_languages_are_refused(language: str) -> None:
    assert refused(template, name="hi", language=language, components=[]) == "template.language"


def test_template_up_to_20_components() -> None:
    assert len(template(name="hi", language="en", components=[BODY] * 20).components) == 20
    refused_at = refused(template, name="hi", language="en", components=[BODY] * 21)
    assert refused_at == "template.components"


@pytest.mark.parametrize(
    "kind", ["header", "body", "button", "footer", "carousel", "limited_time_offer", "BODY"]
)
def test_template_component_types(kind: str) -> None:
    assert template(name="hi", language="en", components=[{"type": kind}]).components


@pytest.mark.parametrize(
    "component",
    [{"type": "bodies"}, {"type": ""}, {"type": 1}, {"type": None}, {"parameters": []}],
)
def test_other_component_types_name_the_component(component: Mapping[str, Any]) -> None:
    components = [BODY, component]
    param = refused(template, name="hi", language="en", components=components)
    assert param == "template.components[1].type"


# --- summary ---------------------------------------------------------------------------------


def test_summary_is_short_and_log_safe() -> None:
    assert summary(Text(body="a" * 80)) == "a" * 80
    long = summary(Text(body="a" * 81))
    assert long == "a" * 79 + "…"
    assert len(long) == 80
    assert summary(Text(body="a" * 500), limit=10) == "a" * 9 + "…"


def test_summary_of_each_kind() -> None:
    assert summary(Media(kind=MessageKind.IMAGE, url=IMAGE_URL, caption="Hi")) == "[image] Hi"
    assert summary(Media(kind=MessageKind.STICKER, url=IMAGE_URL)) == "[sticker]"
    assert summary(Template(name="order_shipped", language="en_US")) == (
        "[template order_shipped/en_US]"
    )
    assert summary(Buttons(body="Pick one", buttons=(Button(id="a", title="A"),))) == "Pick one"
