"""The ports the use cases call. Adapters satisfy them structurally; test fakes do too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from domain.templates import CatalogTemplate


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    wamid: str
    wa_id: str | None = None
    message_status: str | None = None


class CloudApi(Protocol):
    """Sends one message body (the Cloud API's own JSON) from one business number."""

    async def send(self, phone_number_id: str, payload: Mapping[str, Any]) -> SendResult: ...


class TemplateSource(Protocol):
    """Lists a WhatsApp Business Account's whole template catalog (every page)."""

    async def list_templates(self, waba_id: str) -> list[CatalogTemplate]: ...
