"""hostnode isolation: its sandbox and the limits it enforces

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-25 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hostnodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sandbox', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('enforced_limits', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('hostnodes', schema=None) as batch_op:
        batch_op.drop_column('enforced_limits')
        batch_op.drop_column('sandbox')
