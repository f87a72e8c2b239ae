"""Provider webhook events per delivery; deliveries by provider id; profiles by phone (inbound SMS).

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import orchestrator.store.schema
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('delivery_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_event_id', sa.String(length=200), nullable=False),
    sa.Column('delivery_key', sa.String(length=400), nullable=True),
    sa.Column('provider_id', sa.String(length=200), nullable=True),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_events')),
    sa.UniqueConstraint('provider_event_id', name=op.f('uq_delivery_events_provider_event_id'))
    )
    with op.batch_alter_table('delivery_events', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_events_key', ['delivery_key'], unique=False)
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_provider_id', ['provider_id'], unique=False)
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.create_index('ix_profiles_phone', ['phone'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.drop_index('ix_profiles_phone')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_provider_id')
    with op.batch_alter_table('delivery_events', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_events_key')
    op.drop_table('delivery_events')
