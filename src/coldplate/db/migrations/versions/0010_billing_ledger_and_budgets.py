"""billing: ledger entries, open segments on instances, instance and project budgets

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 14:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ledger_entries',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('project_id', sa.String(length=40), nullable=False),
    sa.Column('instance_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('segment', sa.Integer(), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seconds', sa.BigInteger(), nullable=False),
    sa.Column('rate_micros', sa.BigInteger(), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('gpu_type', sa.String(length=40), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index('uq_ledger_entries_piece', ['instance_id', 'kind', 'segment', 'period_start'], unique=True)
        batch_op.create_index('ix_ledger_entries_project_period', ['project_id', 'period_start'], unique=False)
        batch_op.create_index('ix_ledger_entries_instance_period', ['instance_id', 'period_start'], unique=False)

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('budget_limit_micros', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('budget_alerted', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('reserved_hours', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reserved_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('seg_kind', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('seg_no', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('seg_start', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('seg_rate_micros', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('seg_billed_s', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('billed_micros', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_instances_seg_start'), ['seg_start'], unique=False)

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('monthly_budget_micros', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('on_budget_exceeded', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('budget_exceeded_month', sa.String(length=7), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('budget_exceeded_month')
        batch_op.drop_column('on_budget_exceeded')
        batch_op.drop_column('monthly_budget_micros')

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_seg_start'))
        for column in ('billed_micros', 'seg_billed_s', 'seg_rate_micros', 'seg_start', 'seg_no', 'seg_kind',
                       'reserved_until', 'reserved_hours', 'budget_alerted', 'budget_limit_micros'):
            batch_op.drop_column(column)

    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_entries_instance_period')
        batch_op.drop_index('ix_ledger_entries_project_period')
        batch_op.drop_index('uq_ledger_entries_piece')
    op.drop_table('ledger_entries')
