"""instance volumes and cloud_init

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 09:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('volumes', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('cloud_init', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('cloud_init')
        batch_op.drop_column('volumes')
