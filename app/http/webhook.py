"""Meta's webhook: the subscription handshake, and signed event batches."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from adapters.cloud_api.webhooks import WebhookPayload, decoder, signature_valid
from app.container import Services
from app.errors import ApiError
from app.http import docs
from app.http.problems import Problem
from app.services.webhooks import BadWebhook, ingest

_log = structlog.get_logger("wa_router.webhook")
MAX_WEBHOOK_BYTES = 3 * 1024 * 1024  # Meta: payloads up to 3 MB


class WebhookAck(msgspec.Struct):
    received: bool = True


class WebhookController(Controller):
    path = "/v1/whatsapp/webhook"
    tags = ["webhook"]

    @get(
        "/",
        operation_id="verifyWebhook",
        summary="Webhook subscription handshake",
        media_type="text/plain",
        responses={
            403: ResponseSpec(
                data_container=Problem,
                description="verification failed",
                media_type="application/problem+json",
                generate_examples=False,
            )
        },
    )
    async def verify(
        self,
        services: NamedDependency[Services],
        mode: Annotated[str | None, QueryParameter(name="hub.mode", required=False)] = None,
        token: Annotated[
            str | None, QueryParameter(name="hub.verify_token", required=False)
        ] = None,
        challenge: Annotated[
            str | None, QueryParameter(name="hub.challenge", required=False)
        ] = None,
    ) -> str:
        """Meta calls this when the callback URL is saved: answer the challenge if the verify
        token matches `WA_ROUTER_VERIFY_TOKEN`."""
        expected = services.settings.verify_token
        if (
            mode == "subscribe"
            and expected
            and token is not None
            and challenge is not None
            and hmac.compare_digest(token.encode(), expected.encode())
        ):
            return challenge
        raise ApiError(
            403,
            "webhook_verification_failed",
            "hub.mode must be subscribe and hub.verify_token must match",
        )

    @post(
        "/",
        operation_id="receiveWebhook",
        summary="Receive Meta's events",
        status_code=200,
        request_max_body_size=MAX_WEBHOOK_BYTES,
        responses={
            400: ResponseSpec(
                data_container=Problem,
                description="unreadable payload",
                media_type="application/problem+json",
                generate_examples=False,
            ),
            401: ResponseSpec(
                data_container=Problem,
                description="missing or wrong X-Hub-Signature-256",
                media_type="application/problem+json",
                generate_examples=False,
            ),
            503: docs.DATABASE_DOWN,
        },
    )
    async def receive(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> WebhookAck:
        """The Cloud API's own payload, signed with the app secret over the raw bytes. Every
        message and status of the batch is stored before the 200."""
        body = await request.body()
        secret = services.webhook_secret
        if secret is None or not signature_valid(
            body, request.headers.get("x-hub-signature-256"), secret
        ):
            raise ApiError(
                401,
                "webhook_signature_invalid",
                "X-Hub-Signature-256 must be sha256=<HMAC-SHA256 of the body with the app secret>",
            )
        try:
            payload: WebhookPayload = decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise ApiError(
                400, "malformed_json", f"not a Cloud API webhook payload: {exc}"
            ) from None
        try:
            report = await ingest(services.db, payload, now=services.clock())
        except BadWebhook as exc:
            raise ApiError(400, "validation_failed", str(exc)) from None
        _log.info("webhook", **report.as_log())
        services.metrics.webhook_ingested(report.by_kind(), report.delivered_after)
        return WebhookAck()
