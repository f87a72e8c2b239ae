"""Deliveries in flight, waiting to retry or of unknown outcome (counted by GET /metrics).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

OPEN = "status IN ('sending', 'retry', 'unknown')"


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_open', ['status', 'channel'], unique=False,
                              postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_open', postgresql_where=sa.text(OPEN),
                            sqlite_where=sa.text(OPEN))
