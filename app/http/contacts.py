"""A contact's 24-hour customer service window, as seen by one sender: may a free-form message
go now, and until when."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter, QueryParameter

from app.container import Services
from app.http import docs
from app.http.bodies import wa_id_of
from app.http.openapi import SECURITY
from app.http.schemas import ContactWindow, SenderId
from app.services import reads
from domain.model import ApiKey, Scope


async def window_of(
    services: Services, key: ApiKey, *, sender_id: str | None, wa_id: str
) -> ContactWindow:
    sender, view = await reads.contact_window(
        services.db,
        services.senders,
        key,
        sender_id=sender_id,
        wa_id=wa_id,
        now=services.clock(),
    )
    return ContactWindow(
        sender_id=sender,
        wa_id=wa_id,
        open=view.open,
        last_inbound_at=view.last_inbound_at,
        closes_at=view.closes_at,
        seconds_remaining=view.seconds_remaining,
    )


class ContactsController(Controller):
    path = "/v1/whatsapp/contacts"
    tags = ["messages"]
    security = SECURITY

    @get(
        "/{to:str}/window",
        operation_id="getContactWindow",
        summary="The customer service window of a contact",
        opt={"scope": Scope.MESSAGES_READ, "rate": "read"},
        responses=docs.reads(
            None,
            "validation_failed (param to), or unknown_sender (sender_id not registered, or "
            "missing when it cannot be inferred)",
        ),
        response_headers=docs.READ_HEADERS,
    )
    async def window(
        self,
        services: NamedDependency[Services],
        api_key: NamedDependency[ApiKey],
        to: Annotated[
            str, Parameter(description="The contact: E.164, with or without + (URL-encoded)")
        ],
        sender_id: Annotated[SenderId | None, QueryParameter(required=False, max_length=32)] = None,
    ) -> ContactWindow:
        """Open while less than 24 hours have passed since the customer last wrote to this
        sender (and the Cloud API has not reported it closed since). `sender_id` may be left
        out when the key allows one sender or only one exists, as on the send route."""
        return await window_of(services, api_key, sender_id=sender_id, wa_id=wa_id_of(to))
