"""OpenAPI for routes that decode their own bodies (app/http/bodies.py): the request body schema
comes from the msgspec Struct itself, inlined into the operation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    Operation,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
    Server,
    Tag,
)

SECURITY: list[SecurityRequirement] = [{"BearerAuth": []}, {"ApiKeyHeader": []}]


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def inline_schema(struct: type) -> dict[str, Any]:
    schema = msgspec.json.schema(struct)
    return cast("dict[str, Any]", _inline(schema, schema.get("$defs", {})))


def json_body(struct: type, *, description: str) -> type[Operation]:
    """An Operation class documenting ``struct`` as the JSON request body."""
    schema = cast("Schema", inline_schema(struct))

    @dataclass
    class _JsonBodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=schema)},
                description=description,
                required=True,
            )

    return _JsonBodyOperation


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="wa-router",
        version="1.0.0",
        description=(
            "Routes CRM messages to the WhatsApp Business Cloud API. Free-form messages are "
            "accepted only inside the 24-hour customer service window (else 422 "
            "outside_service_window: use the templates route). A 202 means the message is "
            "stored durably; poll its status. Every error is application/problem+json with a "
            "stable `code` and the `correlation_id` of the request."
        ),
        servers=[Server(url="/")],
        tags=[
            Tag(name="messages", description="Send free-form and template messages; poll status"),
            Tag(name="webhook", description="Meta's webhook (signed)"),
            Tag(name="sandbox", description="Sandbox mode only (no access token)"),
            Tag(name="support", description="The whole story of a request, by correlation id"),
            Tag(name="operations", description="Health, readiness and metrics"),
        ],
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(
                    type="http", scheme="bearer", description="Authorization: Bearer <key>"
                ),
                "ApiKeyHeader": SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header"
                ),
            }
        ),
        use_handler_docstrings=True,
        path="/schema",
        create_examples=False,
    )
