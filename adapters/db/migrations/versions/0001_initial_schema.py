"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op



revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('clients',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clients')),
    sa.UniqueConstraint('name', name=op.f('uq_clients_name'))
    )
    op.create_table('contacts',
    sa.Column('sender_id', sa.String(length=32), nullable=False),
    sa.Column('wa_id', sa.String(length=32), nullable=False),
    sa.Column('last_inbound_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('window_closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_send_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('sender_id', 'wa_id', name=op.f('pk_contacts'))
    )
    op.create_table('inbound_messages',
    sa.Column('wamid', sa.String(length=200), nullable=False),
    sa.Column('sender_id', sa.String(length=32), nullable=False),
    sa.Column('wa_id', sa.String(length=32), nullable=True),
    sa.Column('user_id', sa.String(length=160), nullable=True),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('wamid', name=op.f('pk_inbound_messages'))
    )
    op.create_table('message_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=40), nullable=True),
    sa.Column('correlation_id', sa.String(length=128), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('applied', sa.Boolean(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_events'))
    )
    with op.batch_alter_table('message_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_events_correlation_id'), ['correlation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_message_events_message_id'), ['message_id'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=40), nullable=False),
    sa.Column('sender_id', sa.String(length=32), nullable=False),
    sa.Column('wa_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('wamid', sa.String(length=200), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_title', sa.String(length=500), nullable=True),
    sa.Column('error_detail', sa.Text(), nullable=True),
    sa.Column('error_source', sa.String(length=16), nullable=True),
    sa.Column('correlation_id', sa.String(length=128), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('valid_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('wamid', name=op.f('uq_messages_wamid'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_client_id', ['client_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_correlation_id'), ['correlation_id'], unique=False)
        batch_op.create_index('ix_messages_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('orphan_statuses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('wamid', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orphan_statuses')),
    sa.UniqueConstraint('wamid', 'status', name=op.f('uq_orphan_statuses_wamid_status'))
    )
    with op.batch_alter_table('orphan_statuses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orphan_statuses_wamid'), ['wamid'], unique=False)

    op.create_table('sandbox_state',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_sandbox_state'))
    )
    op.create_table('senders',
    sa.Column('phone_number_id', sa.String(length=32), nullable=False),
    sa.Column('waba_id', sa.String(length=32), nullable=True),
    sa.Column('display_number', sa.String(length=32), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('max_mps', sa.Integer(), nullable=False),
    sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pause_reason', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('phone_number_id', name=op.f('pk_senders'))
    )
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=40), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.String(length=200), nullable=False),
    sa.Column('senders', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_api_keys_client_id_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('secret_sha256', name=op.f('uq_api_keys_secret_sha256'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_client_id'), ['client_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_client_id'))

    op.drop_table('api_keys')
    op.drop_table('senders')
    op.drop_table('sandbox_state')
    with op.batch_alter_table('orphan_statuses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orphan_statuses_wamid'))

    op.drop_table('orphan_statuses')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_due')
        batch_op.drop_index(batch_op.f('ix_messages_correlation_id'))
        batch_op.drop_index('ix_messages_client_id')

    op.drop_table('messages')
    with op.batch_alter_table('message_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_events_message_id'))
        batch_op.drop_index(batch_op.f('ix_message_events_correlation_id'))

    op.drop_table('message_events')
    op.drop_table('inbound_messages')
    op.drop_table('contacts')
    op.drop_table('clients')
