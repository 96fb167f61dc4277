"""structlog, configured once: JSON lines (or console on a TTY), contextvars merged into every
line (correlation_id, message_id, sender_id)."""

from __future__ import annotations

import logging
import sys

import structlog

from app.settings import LogFormat

_REDACTED_KEYS = frozenset({"authorization", "x-api-key", "token", "access_token", "key", "secret"})


def _redact(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    for key in list(event_dict):
        if key.lower() in _REDACTED_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(fmt: LogFormat, level: int = logging.INFO) -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt is LogFormat.CONSOLE
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Quiet the access log of the ASGI server: our middleware writes one line per request.
    logging.getLogger("uvicorn.access").disabled = True
