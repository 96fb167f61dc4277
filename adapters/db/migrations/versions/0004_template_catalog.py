"""template catalog: templates per WABA, and which WABAs were synced

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op



revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('template_catalogs',
    sa.Column('waba_id', sa.String(length=32), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('waba_id', name=op.f('pk_template_catalogs'))
    )
    op.create_table('templates',
    sa.Column('waba_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=512), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=True),
    sa.Column('parameter_format', sa.String(length=16), nullable=False),
    sa.Column('components', sa.JSON(), nullable=True),
    sa.Column('template_id', sa.String(length=32), nullable=True),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('waba_id', 'name', 'language', name=op.f('pk_templates'))
    )


def downgrade() -> None:
    op.drop_table('templates')
    op.drop_table('template_catalogs')
