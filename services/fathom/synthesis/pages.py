"""Page texts for the synthesizer, read back from the snapshots the fetch chain stored.

The guided writer checks what it writes about a page against that page's own text. The trace
keeps only the extractor's answer; the page itself is in the snapshot store, under the sha256 the
``query_url`` call recorded. Reading it again with the same reader gives the text the extractor
was shown.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from fathom.agent.trajectory import ToolCall
from fathom.core.config import FetchSettings
from fathom.core.errors import FathomError, FetchError
from fathom.core.logging import get_logger
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.content import read_page
from fathom.tools.fetch.snapshots import SnapshotStore, stored_page

log = get_logger(__name__)


class SnapshotPageTexts:
    """``PageTexts`` over a snapshot store: the main text of the body a call read, or None."""

    def __init__(self, snapshot_dir: Path, fetch: FetchSettings, index_url: str | None = None) -> None:
        self.store = SnapshotStore(snapshot_dir, index_url=index_url)
        self.fetch = fetch

    def __call__(self, call: ToolCall) -> str | None:
        sha = call.snapshot_sha256
        url = call.arguments.get("url")
        if not sha or not isinstance(url, str):
            return None
        page = self._page(sha, url, call.meta.get("snapshot"))
        if page is None:
            return None
        try:
            return read_page(page, self.fetch).text
        except FetchError as exc:  # it was read once; a reader changed since cannot read it now
            log.warning("synthesis.snapshot_unreadable", url=url, error=exc.message)
            return None

    def _page(self, sha: str, url: str, record: Any) -> FetchedPage | None:
        try:
            hit = self.store.latest(url)
        # The quotes in the trace remain; say why (a SQLite file index, a database index, a blob).
        except (sqlite3.Error, SQLAlchemyError, FathomError, OSError, ValueError) as exc:
            log.warning("synthesis.snapshot_index_unreadable", url=url, error=str(exc))
            hit = None
        if hit is not None and hit[0].sha256 == sha:
            return stored_page(hit[0], hit[1], url, "replay")
        # The URL was fetched again since (or rendered after a plain fetch): the body this call
        # read is still stored under its sha256, and the call's own record describes it.
        if not isinstance(record, dict) or record.get("sha256") != sha:
            return None
        try:
            body = self.store.get_body(sha)
        except (OSError, ValueError):
            return None
        return FetchedPage(url=url, final_url=str(record.get("final_url") or url),
                           status=int(record.get("status") or 200),
                           content_type=str(record.get("content_type") or ""), body=body,
                           fetcher="replay", fetched_at=datetime.now(UTC),
                           encoding=record.get("encoding"), truncated=bool(record.get("truncated")))

    def close(self) -> None:
        self.store.close()
