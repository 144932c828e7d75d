"""the distributed plane: lanes live/train, job claims and leases, batches, job events

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01

Lanes are renamed (``interactive`` -> ``live``, ``training`` -> ``train``). The old check
constraint forbids the new names, so the order is: drop it, rename the rows, add the new one.
New NOT NULL columns are added with a server default (it fills the rows already there), which is
dropped again afterwards: the models set every default in Python, as 0001 does. On SQLite each
step is a batch (a table copy), since SQLite cannot alter constraints in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_LANES = "lane IN ('live', 'train')"
_OLD_LANES = "lane IN ('interactive', 'training')"
_PRIORITY = "priority BETWEEN 0 AND 9"
_FILLED = ("priority", "client_id", "attempts", "cancel_requested")  # NOT NULL with a default
_JOB_INDEXES = {
    "ix_jobs_lane_created_at": ["lane", "created_at"],
    "ix_jobs_batch_id_created_at": ["batch_id", "created_at"],
    "ix_jobs_status_lease_expires_at": ["status", "lease_expires_at"],
    "ix_jobs_status_enqueued_at": ["status", "enqueued_at"],
}


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _rename_lanes(mapping: dict[str, str]) -> None:
    jobs = sa.table("jobs", sa.column("lane", sa.String))
    for old, new in mapping.items():
        op.execute(jobs.update().where(jobs.c.lane == old).values(lane=new))


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_lane"), type_="check")
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("client_id", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("client_request_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("external_id", sa.String(256), nullable=True))
        batch.add_column(sa.Column("gold_answer", sa.Text(), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", _ts(), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("enqueued_at", _ts(), nullable=True))
        batch.add_column(sa.Column("deadline_at", _ts(), nullable=True))
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    _rename_lanes({"interactive": "live", "training": "train"})

    with op.batch_alter_table("jobs") as batch:
        for name in _FILLED:
            batch.alter_column(name, server_default=None)
        batch.create_check_constraint(op.f("ck_jobs_lane"), _NEW_LANES)
        batch.create_check_constraint(op.f("ck_jobs_priority"), _PRIORITY)
        batch.create_unique_constraint(
            op.f("uq_jobs_client_id_client_request_id"), ["client_id", "client_request_id"]
        )
        batch.drop_index("ix_jobs_batch_id")
        for name, columns in _JOB_INDEXES.items():
            batch.create_index(name, columns)

    op.create_table(
        "batches",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("lane", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("client_request_id", sa.String(128), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.CheckConstraint("mode IN ('search', 'report')", name=op.f("ck_batches_mode")),
        sa.CheckConstraint(_NEW_LANES, name=op.f("ck_batches_lane")),
        sa.CheckConstraint(_PRIORITY, name=op.f("ck_batches_priority")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint(
            "client_id", "client_request_id", name=op.f("uq_batches_client_id_client_request_id")
        ),
    )

    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
        sa.UniqueConstraint("stream", "index", name=op.f("uq_job_events_stream_index")),
    )


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("batches")
    with op.batch_alter_table("jobs") as batch:
        for name in _JOB_INDEXES:
            batch.drop_index(name)
        batch.create_index("ix_jobs_batch_id", ["batch_id"])
        batch.drop_constraint(op.f("uq_jobs_client_id_client_request_id"), type_="unique")
        batch.drop_constraint(op.f("ck_jobs_priority"), type_="check")
        batch.drop_constraint(op.f("ck_jobs_lane"), type_="check")
        for name in ("priority", "client_id", "client_request_id", "external_id", "gold_answer",
                     "lease_expires_at", "attempts", "enqueued_at", "deadline_at", "cancel_requested"):
            batch.drop_column(name)

    _rename_lanes({"live": "interactive", "train": "training"})

    with op.batch_alter_table("jobs") as batch:
        batch.create_check_constraint(op.f("ck_jobs_lane"), _OLD_LANES)
