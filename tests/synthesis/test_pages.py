"""Page texts read back from a real snapshot store, as the guided writer checks sentences against."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from fathom.agent.trajectory import ToolCall
from fathom.core.config import FetchSettings
from fathom.synthesis.pages import SnapshotPageTexts
from fathom.tools.fetch.base import FetchedPage, PageSnapshot
from fathom.tools.fetch.content import EXTRACTOR_VERSION, read_page
from fathom.tools.fetch.snapshots import SnapshotStore

URL = "http://127.0.0.1:8765/page/eiffel-tower"
ARTICLE = (
    "<p>The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is "
    "named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to "
    "1889. Locally nicknamed La dame de fer, it was constructed as the centrepiece of the 1889 World's "
    "Fair, and to crown the centennial anniversary of the French Revolution.</p>"
)


def _html(title: str, article: str) -> bytes:
    return (f"<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a></nav>"
            f"<main><h1>{title}</h1><article>{article * 2}</article></main></body></html>").encode()


def _page(body: bytes) -> FetchedPage:
    return FetchedPage(url=URL, final_url=URL, status=200, content_type="text/html", body=body,
                       fetcher="httpx", fetched_at=datetime.now(UTC), encoding="utf-8")


def _read_call(snap: PageSnapshot) -> ToolCall:
    """A successful query_url call as the agent loop records it."""
    record = asdict(snap) | {"fetched_at": snap.fetched_at.isoformat()}
    return ToolCall(index=0, name="query_url", arguments={"url": URL, "goal": "designer"}, raw="{}",
                    result="URL: ...", ok=True, snapshot_sha256=snap.sha256,
                    meta={"snapshot_sha256": snap.sha256, "snapshot": record})


def test_the_text_of_the_very_body_a_call_read_comes_back(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    first = _page(_html("Eiffel Tower", ARTICLE))
    call = _read_call(store.put(first, EXTRACTOR_VERSION))
    # the same URL fetched again later with other content: the call still gets what it read
    store.put(_page(_html("Eiffel Tower", "<p>This page has moved to a new address for good.</p>")),
              EXTRACTOR_VERSION)
    texts = SnapshotPageTexts(tmp_path, FetchSettings())
    try:
        text = texts(call)
        assert text == read_page(first, FetchSettings()).text
        assert text is not None and "whose company designed and built the tower" in text
        assert "moved to a new address" not in text
    finally:
        texts.close()
        store.close()


def test_no_text_without_a_snapshot(tmp_path: Path) -> None:
    texts = SnapshotPageTexts(tmp_path, FetchSettings())
    try:
        unread = ToolCall(index=0, name="query_url", arguments={"url": URL, "goal": "g"}, raw="{}", ok=True)
        assert texts(unread) is None  # never snapshotted: the trace's quotes are all there is
        gone = ToolCall(index=0, name="query_url", arguments={"url": URL, "goal": "g"}, raw="{}", ok=True,
                        snapshot_sha256="ab" * 32)
        assert texts(gone) is None  # a sha256 with no stored body
    finally:
        texts.close()
