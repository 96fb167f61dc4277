"""sender leases, pair pacing, pair order index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op



revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sender_leases',
    sa.Column('sender_id', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sender_id', name=op.f('pk_sender_leases'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pair_strikes', sa.Integer(), server_default='0', nullable=False))

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_pair', ['sender_id', 'wa_id', 'status', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_pair')

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('pair_strikes')

    op.drop_table('sender_leases')
