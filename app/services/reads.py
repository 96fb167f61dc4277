"""Read use cases for pollers: a page of a client's messages, the window of a contact."""

from __future__ import annotations

from datetime import datetime

from adapters.db import contacts as contact_repo
from adapters.db import listing
from adapters.db.engine import Database
from app.services.directory import SenderDirectory
from domain.model import ApiKey
from domain.window import WindowView, describe_window


async def page_of_messages(
    db: Database,
    key: ApiKey,
    filters: listing.MessageFilter,
    *,
    before_id: str | None,
    limit: int,
) -> listing.MessagePage:
    """The client's messages, newest first, older than ``before_id`` (the cursor)."""
    async with db.read() as conn:
        return await listing.list_messages(
            conn, client_id=key.client_id, filters=filters, before_id=before_id, limit=limit
        )


async def contact_window(
    db: Database,
    senders: SenderDirectory,
    key: ApiKey,
    *,
    sender_id: str | None,
    wa_id: str,
    now: datetime,
) -> tuple[str, WindowView]:
    """The window a send would meet: the sender is chosen exactly as for a send."""
    sender = await senders.resolve(key, sender_id)
    async with db.read() as conn:
        state = await contact_repo.window_state(conn, sender, wa_id)
    return sender, describe_window(state, now)
