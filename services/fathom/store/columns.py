"""Column types that behave the same on SQLite and PostgreSQL.

Why each exists:
- ``JSONDoc``: JSON on SQLite, JSONB on PostgreSQL (indexable, compact), one name in the models.
- ``UTCDateTime``: SQLite has no time zones and silently drops them; values are stored as UTC and
  always come back timezone-aware (UTC) on both backends. Naive input is taken to be UTC.
- ``StoredText``: PostgreSQL text cannot hold NUL characters (SQLite can). Page text and model
  output sometimes contain them; they are replaced with U+FFFD on both backends so that a round
  trip gives the same string everywhere instead of failing on one backend only.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

NUL_REPLACEMENT = "\ufffd"

JSONDoc: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        # SQLite's DATETIME storage would drop the offset anyway; store naive UTC explicitly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)


class StoredText(TypeDecorator[str]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or "\x00" not in value:
            return value
        return value.replace("\x00", NUL_REPLACEMENT)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def dump_json(value: Any) -> str:
    """The engine's JSON serializer: strict JSON (PostgreSQL rejects NaN and Infinity, so both
    backends do), NUL characters replaced as in ``StoredText``."""
    return json.dumps(_without_nul(value), ensure_ascii=False, allow_nan=False)
