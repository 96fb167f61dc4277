"""The message status machine: statuses only move up one total order, every event is kept.

queued → accepted → sent → failed → delivered → read. ``failed`` ranks above ``sent`` (a failure
report after "sent" is news) but below ``delivered`` and ``read``: on multi-device users Meta can
report ``failed`` and then ``delivered`` (cloud-api.md §4.3), and then the customer has it.
"""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    QUEUED = "queued"
    ACCEPTED = "accepted"
    SENT = "sent"
    FAILED = "failed"
    DELIVERED = "delivered"
    READ = "read"


RANK: dict[MessageStatus, int] = {status: rank for rank, status in enumerate(MessageStatus)}

#: Statuses that the Cloud API reports by webhook.
WEBHOOK_STATUSES = frozenset(
    {MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.FAILED}
)

#: Polling clients stop here.
FINAL_STATUSES = frozenset({MessageStatus.READ, MessageStatus.FAILED})


def advance(current: MessageStatus, incoming: MessageStatus) -> MessageStatus | None:
    """The new status if ``incoming`` moves the message forward, else ``None`` (a late, duplicate
    or older event: kept in the event log, never applied)."""
    return incoming if RANK[incoming] > RANK[current] else None


def is_final(status: MessageStatus) -> bool:
    return status in FINAL_STATUSES
