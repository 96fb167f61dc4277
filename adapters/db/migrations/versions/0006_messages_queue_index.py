"""messages: the queue index (status, sender_id, id) replaces (status, next_attempt_at)

The dispatcher claims a sender's oldest queued messages and asks which senders have any: with
(status, next_attempt_at) both read every queued row (a claim took 35 ms with 9,400 queued on
SQLite); in (status, sender_id, id) order each stops after the rows it takes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_queue", ["status", "sender_id", "id"], unique=False)
        batch_op.drop_index("ix_messages_due")


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_due", ["status", "next_attempt_at"], unique=False)
        batch_op.drop_index("ix_messages_queue")
