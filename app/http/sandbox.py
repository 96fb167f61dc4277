"""Sandbox-only route: play a customer writing in (mounted only without an access token)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency

from app.container import Services
from app.errors import ApiError
from app.http import docs
from app.http.bodies import decode_body, wa_id_of
from app.http.openapi import SECURITY, json_body
from app.http.schemas import SandboxInboundRequest, SandboxInboundResponse
from domain.model import ApiKey, Scope

_decoder = msgspec.json.Decoder(SandboxInboundRequest)


class SandboxController(Controller):
    path = "/v1/sandbox"
    tags = ["sandbox"]
    security = SECURITY

    @post(
        "/inbound",
        operation_id="sandboxInbound",
        summary="Play a customer's message (sandbox only)",
        status_code=200,
        opt={"scope": Scope.MESSAGES_SEND},
        operation_class=json_body(SandboxInboundRequest, description="The customer's message"),
        responses=docs.SANDBOX,
    )
    async def inbound(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        api_key: NamedDependency[ApiKey],
    ) -> Response[SandboxInboundResponse]:
        """The simulator posts a signed inbound-message webhook to this router, as Meta would:
        the customer service window of (sender, from) opens for 24 hours."""
        if services.sandbox is None:
            raise ApiError(404, "not_found", "the sandbox is off (an access token is set)")
        body = await decode_body(request, _decoder)
        wa_id = wa_id_of(body.from_, param="from")
        if not body.text.strip():
            raise ApiError(422, "validation_failed", "must not be empty", param="text")
        sender_id = await services.senders.resolve(api_key, body.sender_id)
        wamid, at = await services.sandbox.customer_writes(
            phone_number_id=sender_id, wa_id=wa_id, text=body.text
        )
        return Response(
            SandboxInboundResponse(
                sender_id=sender_id, wa_id=wa_id, wamid=wamid, last_inbound_at=at
            )
        )
