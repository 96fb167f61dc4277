"""The Cloud API adapter's own errors: the network failed, or Meta answered with an error."""

from __future__ import annotations


class CloudApiError(Exception):
    """Base of every failure of a Cloud API call."""


class CloudApiUnavailable(CloudApiError):
    """No usable answer: connection refused or reset, or a timeout.

    ``maybe_sent`` is True when the request may have reached Meta (a read timeout, a reset
    after the body went out): the message could have been accepted although we have no wamid.
    """

    def __init__(self, reason: str, *, maybe_sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.maybe_sent = maybe_sent


class CloudApiStatusError(CloudApiError):
    """Meta answered with an error body (or an unreadable non-2xx answer)."""

    def __init__(
        self,
        *,
        http_status: int,
        code: int | None,
        title: str,
        details: str | None = None,
        fbtrace_id: str | None = None,
        is_transient: bool | None = None,
    ) -> None:
        super().__init__(f"HTTP {http_status}, code {code}: {title}")
        self.http_status = http_status
        self.code = code
        self.title = title
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.is_transient = is_transient
