"""rewards: one reward (scalar + breakdown JSON) per trajectory and stage

Revision ID: 0003
Revises: 0002
Create Date: 2026-03-01

A new table only, so no batch mode is needed on SQLite. The unique (trajectory_id, stage) makes a
redelivered scoring task store nothing twice; its index also serves "rewards of a trajectory".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rewards",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trajectory_id", sa.String(36), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("reward", sa.Double(), nullable=False),
        sa.Column("breakdown", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("stage IN (1, 2)", name=op.f("ck_rewards_stage")),
        sa.ForeignKeyConstraint(
            ["trajectory_id"], ["trajectories.id"], name=op.f("fk_rewards_trajectory_id_trajectories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
        sa.UniqueConstraint("trajectory_id", "stage", name=op.f("uq_rewards_trajectory_id_stage")),
    )


def downgrade() -> None:
    op.drop_table("rewards")
