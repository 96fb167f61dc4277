"""The Cloud API over httpx: one AsyncClient, made in the lifespan, explicit timeouts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import msgspec

from adapters.cloud_api.errors import CloudApiStatusError, CloudApiUnavailable
from domain.ports import SendResult
from domain.templates import CatalogTemplate, parameter_format

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=15.0, write=10.0, pool=30.0)
TEMPLATE_FIELDS = "name,language,status,category,components,parameter_format,id"
TEMPLATE_PAGE_SIZE = 100
#: 6,000 templates per WABA at most (cloud-api.md §7): far fewer pages than this.
TEMPLATE_PAGES_MAX = 1000


class _ErrorData(msgspec.Struct):
    details: str | None = None


class _Error(msgspec.Struct):
    message: str = ""
    code: int | None = None
    type: str | None = None
    error_data: _ErrorData | None = None
    fbtrace_id: str | None = None
    is_transient: bool | None = None
    error_user_title: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error


class _SentMessage(msgspec.Struct):
    id: str
    message_status: str | None = None


class _SentContact(msgspec.Struct):
    wa_id: str | None = None
    input: str | None = None


class _SendResponse(msgspec.Struct):
    messages: list[_SentMessage]
    contacts: list[_SentContact] = []


class _ListedTemplate(msgspec.Struct):
    name: str
    language: str
    status: str = ""
    category: str | None = None
    parameter_format: str | None = None
    components: list[dict[str, Any]] = []
    id: str | None = None


class _Cursors(msgspec.Struct):
    after: str | None = None


class _Paging(msgspec.Struct):
    cursors: _Cursors | None = None
    next: str | None = None


class _TemplatePage(msgspec.Struct):
    data: list[_ListedTemplate] = []
    paging: _Paging | None = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)
_send_decoder = msgspec.json.Decoder(_SendResponse)
_template_page_decoder = msgspec.json.Decoder(_TemplatePage)
_encoder = msgspec.json.Encoder()


def _title(message: str, code: int | None) -> str:
    """Meta's message reads "(#131047) Re-engagement message": keep the title part."""
    prefix = f"(#{code}) "
    return message[len(prefix) :] if code is not None and message.startswith(prefix) else message


def _trace_write(on_write: Callable[[], None]) -> Callable[[str, Any], Awaitable[None]]:
    """httpx's ``trace`` extension (httpcore's events): tell ``on_write`` when the request's
    headers start going out, after any wait for a pooled connection or a new one's set-up.
    A transport that is not httpcore (a test's MockTransport) sends no events."""

    async def trace(event: str, _info: Any) -> None:
        if event.endswith(".send_request_headers.started"):
            on_write()

    return trace


def status_error(response: httpx.Response) -> CloudApiStatusError:
    try:
        error = _error_decoder.decode(response.content).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return CloudApiStatusError(
            http_status=response.status_code,
            code=None,
            title=response.reason_phrase or f"HTTP {response.status_code}",
        )
    return CloudApiStatusError(
        http_status=response.status_code,
        code=error.code,
        title=_title(error.message, error.code) or error.error_user_title or "",
        details=error.error_data.details if error.error_data else None,
        fbtrace_id=error.fbtrace_id,
        is_transient=error.is_transient,
    )


class GraphHttp(httpx.AsyncClient):
    """An AsyncClient that keeps its transport at hand: :meth:`CloudApiClient.send` hands its
    requests straight to it. ``AsyncClient.send``'s layers (auth flow, redirects, cookie
    extraction, event hooks) took a quarter of a send's CPU and do nothing for a POST with a
    bearer token to a fixed URL that answers JSON."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **options: Any) -> None:
        super().__init__(transport=transport, **options)
        self.transport = transport


class CloudApiClient:
    """Satisfies :class:`domain.ports.CloudApi` against graph.facebook.com (or a fake)."""

    def __init__(self, http: GraphHttp, *, token: str, version: str) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._version = version
        # A send's request is built here from parts made once (the client's base URL, headers
        # and timeouts): httpx's build_request parsed and merged them again on every send, a
        # sixth of a dispatcher's CPU at 800 sends/s.
        self._send_headers = httpx.Headers({**http.headers, **self._headers})
        self._timeouts = http.timeout.as_dict()
        self._send_urls: dict[str, httpx.URL] = {}

    def _send_url(self, phone_number_id: str) -> httpx.URL:
        url = self._send_urls.get(phone_number_id)
        if url is None:
            if len(self._send_urls) > 10_000:
                self._send_urls.clear()
            url = self._http.base_url.join(f"{self._version}/{phone_number_id}/messages")
            self._send_urls[phone_number_id] = url
        return url

    async def send(
        self,
        phone_number_id: str,
        payload: Mapping[str, Any],
        *,
        on_write: Callable[[], None] | None = None,
    ) -> SendResult:
        extensions: dict[str, Any] = {"timeout": self._timeouts}
        if on_write is not None:
            extensions["trace"] = _trace_write(on_write)
        request = httpx.Request(
            "POST",
            self._send_url(phone_number_id),
            headers=self._send_headers,
            content=_encoder.encode(payload),
            extensions=extensions,
        )
        try:
            response = await self._http.transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.ConnectError as exc:
            raise CloudApiUnavailable(f"connect: {exc!r}", maybe_sent=False) from exc
        except httpx.ConnectTimeout as exc:
            raise CloudApiUnavailable("connect timeout", maybe_sent=False) from exc
        except httpx.PoolTimeout as exc:
            raise CloudApiUnavailable("pool timeout", maybe_sent=False) from exc
        except httpx.TimeoutException as exc:
            raise CloudApiUnavailable(f"timeout: {type(exc).__name__}", maybe_sent=True) from exc
        except httpx.TransportError as exc:
            raise CloudApiUnavailable(f"transport: {type(exc).__name__}", maybe_sent=True) from exc
        except httpx.HTTPError as exc:  # decoding …: the request went out
            raise CloudApiUnavailable(f"http: {type(exc).__name__}", maybe_sent=True) from exc
        if response.status_code != httpx.codes.OK:
            raise status_error(response)
        try:
            body = _send_decoder.decode(response.content)
            sent = body.messages[0]
        except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as exc:
            raise CloudApiStatusError(
                http_status=response.status_code, code=None, title="unreadable success body"
            ) from exc
        wa_id = body.contacts[0].wa_id if body.contacts else None
        return SendResult(wamid=sent.id, wa_id=wa_id, message_status=sent.message_status)

    async def list_templates(self, waba_id: str) -> list[CatalogTemplate]:
        """Every template of the WABA: ``GET /{waba_id}/message_templates``, page after page by
        the ``after`` cursor while Meta says there is a next page. The ``next`` URL itself is
        never followed: the next request goes to our own base URL, with our own token."""
        url = f"/{self._version}/{waba_id}/message_templates"
        params = {"fields": TEMPLATE_FIELDS, "limit": str(TEMPLATE_PAGE_SIZE)}
        found: list[CatalogTemplate] = []
        seen: set[str] = set()
        for _ in range(TEMPLATE_PAGES_MAX):
            response = await self._get(url, params)
            if response.status_code != httpx.codes.OK:
                raise status_error(response)
            try:
                page = _template_page_decoder.decode(response.content)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise CloudApiStatusError(
                    http_status=response.status_code, code=None, title="unreadable template list"
                ) from exc
            found.extend(_catalog_template(t) for t in page.data)
            paging = page.paging
            after = paging.cursors.after if paging and paging.cursors else None
            if paging is None or not paging.next:
                return found
            if not after or after in seen:
                # A partial catalog would make real templates "not found": refuse it instead.
                raise CloudApiStatusError(
                    http_status=response.status_code,
                    code=None,
                    title="template paging has a next page but no new after cursor",
                )
            seen.add(after)
            params = {**params, "after": after}
        raise CloudApiStatusError(
            http_status=httpx.codes.OK, code=None, title="template list has too many pages"
        )

    async def _get(self, url: str, params: Mapping[str, str]) -> httpx.Response:
        """A read: it changes nothing at Meta, so no failure leaves anything half-sent."""
        headers = {"Authorization": self._headers["Authorization"]}
        try:
            return await self._http.get(url, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise CloudApiUnavailable(f"timeout: {type(exc).__name__}", maybe_sent=False) from exc
        except httpx.HTTPError as exc:
            raise CloudApiUnavailable(f"http: {type(exc).__name__}", maybe_sent=False) from exc


def _catalog_template(listed: _ListedTemplate) -> CatalogTemplate:
    return CatalogTemplate(
        name=listed.name,
        language=listed.language,
        status=listed.status.upper(),
        category=listed.category.upper() if listed.category else None,
        parameter_format=parameter_format(listed.parameter_format),
        components=tuple(listed.components),
        template_id=listed.id,
    )
