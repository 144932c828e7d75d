"""The job store: jobs, trajectories (token-exact), tool calls, page snapshots and reports.

SQLAlchemy 2 over SQLite (local default) or PostgreSQL (by URL), schema by Alembic migrations
shipped in the package. ``Database(url).migrate()`` then ``JobStore(db)``.
"""

from fathom.store.db import Database
from fathom.store.records import (
    BadPageToken,
    BatchInfo,
    BatchItemIn,
    ClaimLost,
    EventInfo,
    JobInfo,
    RecordNotFound,
    ReportInfo,
    RewardInfo,
)
from fathom.store.repository import JobStore

__all__ = [
    "BadPageToken",
    "BatchInfo",
    "BatchItemIn",
    "ClaimLost",
    "Database",
    "EventInfo",
    "JobInfo",
    "JobStore",
    "RecordNotFound",
    "ReportInfo",
    "RewardInfo",
]
