"""The ports the use cases call. Adapters satisfy them structurally; test fakes do too."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

    async def send(
        self,
        phone_number_id: str,
        payload: Mapping[str, Any],
        *,
        on_write: Callable[[], None] | None = None,
    ) -> SendResult:
        """``on_write`` is called when the request is being written to Meta (the moment Meta
        may count it from, for the sender's pace); an adapter that cannot tell never calls it."""
        ...


class TemplateSource(Protocol):
    """Lists a WhatsApp Business Account's whole template catalog (every page)."""

    async def list_templates(self, waba_id: str) -> list[CatalogTemplate]: ...
