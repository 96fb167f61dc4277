"""An in-process simulator of the Cloud API for sandbox mode (no access token).

It answers sends like Meta (a wamid, or 131047 for a free-form message outside its own view of
the window) and, a moment later, posts signed ``sent``, ``delivered`` and ``read`` status
webhooks back to the router, exactly as Meta would."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec
import structlog

from adapters.cloud_api.errors import CloudApiStatusError
from adapters.cloud_api.webhooks import sign
from domain.ports import SendResult
from domain.templates import CatalogTemplate, ParameterFormat
from domain.window import WindowState, window_open

_log = structlog.get_logger("wa_router.sandbox")

SANDBOX_SENDER_ID = "100000000000001"
SANDBOX_DISPLAY_NUMBER = "+15550000001"
SANDBOX_WABA_ID = "100000000000000"
SANDBOX_APP_SECRET = "wa-router-sandbox-app-secret"  # noqa: S105 - public by design: sandbox only

#: (body, X-Hub-Signature-256) → posts them to the router's webhook route.
Deliver = Callable[[bytes, str], Awaitable[None]]
#: (phone_number_id, wa_id) → when the customer last wrote, as the simulator saw it.
LastInbound = Callable[[str, str], Awaitable[datetime | None]]


def _envelope(phone_number_id: str, value: dict[str, Any]) -> bytes:
    return msgspec.json.encode(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": SANDBOX_WABA_ID,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": SANDBOX_DISPLAY_NUMBER.lstrip("+"),
                                    "phone_number_id": phone_number_id,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }
    )


def inbound_text_webhook(
    *, phone_number_id: str, wa_id: str, wamid: str, text: str, at: datetime
) -> bytes:
    return _envelope(
        phone_number_id,
        {
            "contacts": [{"profile": {"name": "Sandbox Customer"}, "wa_id": wa_id}],
            "messages": [
                {
                    "from": wa_id,
                    "id": wamid,
                    "timestamp": str(int(at.timestamp())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        },
    )


def status_webhook(
    *,
    phone_number_id: str,
    wamid: str,
    status: str,
    wa_id: str,
    at: datetime,
    callback_data: str | None,
    errors: list[dict[str, Any]] | None = None,
) -> bytes:
    entry: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(at.timestamp())),
        "recipient_id": wa_id,
    }
    if callback_data is not None:
        entry["biz_opaque_callback_data"] = callback_data
    if errors:
        entry["errors"] = errors
    return _envelope(phone_number_id, {"statuses": [entry]})


#: The sandbox WABA's template catalog, as the simulator lists it.
SANDBOX_TEMPLATES = (
    CatalogTemplate(
        name="hello_world",
        language="en_US",
        status="APPROVED",
        category="UTILITY",
        components=(
            {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
            {"type": "BODY", "text": "Welcome and congratulations!! This is the sandbox."},
            {"type": "FOOTER", "text": "WhatsApp Business Platform sample message"},
        ),
        template_id="100000000000101",
    ),
    CatalogTemplate(
        name="order_shipped",
        language="en_US",
        status="APPROVED",
        category="UTILITY",
        components=(
            {
                "type": "BODY",
                "text": "Hi {{1}}, order {{2}} has shipped",
                "example": {"body_text": [["Ana", "#123"]]},
            },
        ),
        template_id="100000000000102",
    ),
    CatalogTemplate(
        name="appointment_reminder",
        language="en_US",
        status="APPROVED",
        category="UTILITY",
        parameter_format=ParameterFormat.NAMED,
        components=({"type": "BODY", "text": "Hi {{first_name}}, see you on {{date}}."},),
        template_id="100000000000103",
    ),
    CatalogTemplate(
        name="spring_sale",
        language="en_US",
        status="PENDING",
        category="MARKETING",
        components=({"type": "BODY", "text": "Spring sale: 20% off until Sunday."},),
        template_id="100000000000104",
    ),
)


def new_wamid() -> str:
    return "wamid.SANDBOX" + secrets.token_hex(12).upper()


class SandboxCloudApi:
    """Satisfies :class:`domain.ports.CloudApi`."""

    def __init__(
        self,
        *,
        deliver: Deliver,
        last_inbound: LastInbound,
        clock: Callable[[], datetime],
        app_secret: str = SANDBOX_APP_SECRET,
        delays: tuple[float, float, float] = (0.5, 1.0, 2.0),
    ) -> None:
        self._deliver = deliver
        self._last_inbound = last_inbound
        self._clock = clock
        self._secret = app_secret
        self._delays = delays
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(
        self,
        phone_number_id: str,
        payload: Mapping[str, Any],
        *,
        on_write: Callable[[], None] | None = None,
    ) -> SendResult:
        if on_write is not None:
            on_write()  # the simulated Meta has it at once
        wa_id = str(payload.get("to", "")).lstrip("+")
        if payload.get("type") != "template":
            last = await self._last_inbound(phone_number_id, wa_id)
            if not window_open(WindowState(last_inbound_at=last), self._clock()):
                raise CloudApiStatusError(
                    http_status=400,
                    code=131047,
                    title="Re-engagement message",
                    details="Message failed to send because more than 24 hours have passed "
                    "since the customer last replied to this number.",
                    fbtrace_id="SANDBOX" + secrets.token_hex(6),
                )
        wamid = new_wamid()
        callback = payload.get("biz_opaque_callback_data")
        task = asyncio.create_task(
            self._report(phone_number_id, wamid, wa_id, None if callback is None else str(callback))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return SendResult(wamid=wamid, wa_id=wa_id, message_status="accepted")

    async def _report(
        self, phone_number_id: str, wamid: str, wa_id: str, callback: str | None
    ) -> None:
        elapsed = 0.0
        for status, delay in zip(("sent", "delivered", "read"), self._delays, strict=True):
            await asyncio.sleep(max(delay - elapsed, 0.0))
            elapsed = delay
            body = status_webhook(
                phone_number_id=phone_number_id,
                wamid=wamid,
                status=status,
                wa_id=wa_id,
                at=self._clock(),
                callback_data=callback,
            )
            try:
                await self._deliver(body, sign(body, self._secret))
            except Exception as exc:  # noqa: BLE001 - a lost report must not kill the simulator
                _log.warning(
                    "sandbox_status_not_delivered", wamid=wamid, status=status, error=repr(exc)
                )
                return

    async def list_templates(self, waba_id: str) -> list[CatalogTemplate]:
        """The sandbox WABA's fixed catalog; any other WABA is unknown, as Meta would say."""
        if waba_id != SANDBOX_WABA_ID:
            raise CloudApiStatusError(
                http_status=400,
                code=100,
                title="Unsupported get request",
                details=f"Object with ID '{waba_id}' does not exist in the sandbox; only "
                f"{SANDBOX_WABA_ID} does",
                fbtrace_id="SANDBOX" + secrets.token_hex(6),
            )
        return list(SANDBOX_TEMPLATES)

    async def customer_writes(
        self, *, phone_number_id: str, wa_id: str, text: str
    ) -> tuple[str, datetime]:
        """Play a customer's message: Meta posts it to the webhook. Returns (wamid, timestamp)."""
        wamid = new_wamid()
        at = self._clock()
        body = inbound_text_webhook(
            phone_number_id=phone_number_id, wa_id=wa_id, wamid=wamid, text=text, at=at
        )
        await self._deliver(body, sign(body, self._secret))
        return wamid, at.replace(microsecond=0)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
