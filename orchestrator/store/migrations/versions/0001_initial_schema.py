"""Initial schema: profiles, consents, events, journey versions, runs, timers, outbox,
delivery ledger, conversions and activity.

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 11:22:15.593400
"""
from alembic import op
import sqlalchemy as sa
import orchestrator.store.schema
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('activity',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('journey', sa.String(length=200), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=200), nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=True),
    sa.Column('variant', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_activity'))
    )
    with op.batch_alter_table('activity', schema=None) as batch_op:
        batch_op.create_index('ix_activity_journey_at', ['journey', 'at'], unique=False)
        batch_op.create_index('ix_activity_run', ['run_id'], unique=False)

    op.create_table('consents',
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=True),
    sa.Column('updated_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'channel', name=op.f('pk_consents'))
    )
    op.create_table('conversions',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('journey', sa.String(length=200), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('goal', sa.String(length=200), nullable=False),
    sa.Column('at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('holdout', sa.Boolean(), nullable=False),
    sa.Column('variants', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_conversions'))
    )
    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('outbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('journey', sa.String(length=200), nullable=False),
    sa.Column('step', sa.String(length=200), nullable=False),
    sa.Column('variant', sa.String(length=200), nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('provider_id', sa.String(length=200), nullable=True),
    sa.Column('segments', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('key', name=op.f('uq_deliveries_key'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_user_created', ['user_id', 'created_at'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('properties', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('received_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('processed_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_events_event_id'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_pending', ['status', 'received_at'], unique=False)
        batch_op.create_index('ix_events_user_status', ['user_id', 'status'], unique=False)

    op.create_table('journey_versions',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('journey', sa.String(length=200), nullable=False),
    sa.Column('machine', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('deployed_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('current', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_journey_versions'))
    )
    with op.batch_alter_table('journey_versions', schema=None) as batch_op:
        batch_op.create_index('ix_journey_versions_journey_current', ['journey', 'current'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('journey', sa.String(length=200), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('step', sa.String(length=200), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('template', sa.String(length=200), nullable=False),
    sa.Column('channels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('prefer_user', sa.Boolean(), nullable=False),
    sa.Column('variant', sa.String(length=200), nullable=True),
    sa.Column('due_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('created_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('run_id', 'step', 'generation', name=op.f('uq_outbox_run_id_step_generation'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_due', ['status', 'due_at'], unique=False)

    op.create_table('profiles',
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('push_tokens', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('locale', sa.String(length=35), nullable=True),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_profiles'))
    )
    op.create_table('runs',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('journey', sa.String(length=200), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=200), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('started_generation', sa.Integer(), nullable=False),
    sa.Column('wake_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('holdout', sa.Boolean(), nullable=False),
    sa.Column('variants', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('trigger', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('entered_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('exit_reason', sa.String(length=200), nullable=True),
    sa.Column('converted', sa.Boolean(), nullable=False),
    sa.Column('exclusive', sa.Boolean(), nullable=False),
    sa.Column('updated_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_runs'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_user_status', ['user_id', 'status'], unique=False)
        batch_op.create_index('uq_runs_one_unfinished', ['journey', 'user_id'], unique=True, postgresql_where=sa.text("exclusive AND status <> 'finished'"), sqlite_where=sa.text("exclusive AND status <> 'finished'"))

    op.create_table('timers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=200), nullable=False),
    sa.Column('fire_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_by', sa.String(length=100), nullable=True),
    sa.Column('claimed_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('fired_at', orchestrator.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_timers')),
    sa.UniqueConstraint('run_id', 'generation', name=op.f('uq_timers_run_id_generation'))
    )
    with op.batch_alter_table('timers', schema=None) as batch_op:
        batch_op.create_index('ix_timers_due', ['status', 'fire_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('timers', schema=None) as batch_op:
        batch_op.drop_index('ix_timers_due')

    op.drop_table('timers')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('uq_runs_one_unfinished', postgresql_where=sa.text("exclusive AND status <> 'finished'"), sqlite_where=sa.text("exclusive AND status <> 'finished'"))
        batch_op.drop_index('ix_runs_user_status')

    op.drop_table('runs')
    op.drop_table('profiles')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_due')

    op.drop_table('outbox')
    with op.batch_alter_table('journey_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_journey_versions_journey_current')

    op.drop_table('journey_versions')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_user_status')
        batch_op.drop_index('ix_events_pending')

    op.drop_table('events')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_user_created')

    op.drop_table('deliveries')
    op.drop_table('conversions')
    op.drop_table('consents')
    with op.batch_alter_table('activity', schema=None) as batch_op:
        batch_op.drop_index('ix_activity_run')
        batch_op.drop_index('ix_activity_journey_at')

    op.drop_table('activity')
