"""The outbound backlog as operations see it (``/metrics``): queued messages per sender.

A module of its own rather than more of messages.py: that one holds the message lifecycle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.tables import QUEUED_STATUS, messages, senders


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedBySender:
    sender_id: str
    depth: int
    oldest: datetime | None  # created_at of the oldest queued message; None when depth is 0


async def queued_by_sender(conn: AsyncConnection) -> list[QueuedBySender]:
    """Every known sender (0 when nothing is queued, so its series does not vanish) and any
    sender with queued messages, in one GROUP BY."""
    queued = select(
        messages.c.sender_id.label("sender_id"),
        literal(1).label("queued"),
        messages.c.created_at.label("created_at"),
    ).where(messages.c.status == QUEUED_STATUS)
    known = select(
        senders.c.phone_number_id.label("sender_id"),
        literal(0).label("queued"),
        null().label("created_at"),
    )
    rows = union_all(queued, known).subquery()
    result = await conn.execute(
        select(
            rows.c.sender_id,
            func.sum(rows.c.queued).label("depth"),
            func.min(rows.c.created_at).label("oldest"),
        )
        .group_by(rows.c.sender_id)
        .order_by(rows.c.sender_id)
    )
    return [
        QueuedBySender(sender_id=r.sender_id, depth=int(r.depth), oldest=r.oldest) for r in result
    ]
