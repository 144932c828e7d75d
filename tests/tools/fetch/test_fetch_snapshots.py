"""Snapshots: content-addressed bodies, index lookups, and a live -> replay round trip."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fathom.core.config import FetchSettings
from fathom.core.errors import ConfigError, ReplayMiss
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.chain import build_fetch_chain
from fathom.tools.fetch.content import EXTRACTOR_VERSION
from fathom.tools.fetch.snapshots import ReplayFetcher, SnapshotStore
from fetch_site import ARTICLE_SENTENCE, PDF_SENTENCE, Site


def page(url: str, body: bytes, final_url: str | None = None) -> FetchedPage:
    return FetchedPage(
        url=url,
        final_url=final_url or url,
        status=200,
        content_type="text/html",
        body=body,
        fetcher="httpx",
        fetched_at=datetime.now(UTC),
        encoding="utf-8",
    )


def test_put_stores_body_by_hash_and_dedupes(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    body = b"<p>same body</p>"
    a = store.put(page("https://a.example/x", body), "v1")
    b = store.put(page("https://b.example/y", body), "v1")
    sha = hashlib.sha256(body).hexdigest()
    assert a.sha256 == b.sha256 == sha
    blob = tmp_path / "blobs" / sha[:2] / sha[2:4] / sha
    assert blob.read_bytes() == body
    assert len([p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]) == 1
    assert store.count() == 2
    assert store.get_body(sha) == body


def test_latest_matches_canonical_requested_or_final_url(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.put(page("https://Example.org:443/a#frag", b"old"), "v1")
    store.put(page("https://example.org/a", b"new"), "v1")
    store.put(page("https://short.example/r", b"target", final_url="https://example.org/final"), "v1")
    hit = store.latest("HTTPS://EXAMPLE.ORG/a")
    assert hit is not None and hit[1] == b"new"
    final = store.latest("https://example.org/final")
    assert final is not None and final[1] == b"target" and final[0].url == "https://short.example/r"
    assert store.latest("https://example.org/other") is None


def test_store_is_thread_safe(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)

    async def many() -> None:
        await asyncio.gather(
            *(
                asyncio.to_thread(store.put, page(f"https://e.example/{i}", f"b{i % 7}".encode()), "v1")
                for i in range(60)
            )
        )

    asyncio.run(many())
    assert store.count() == 60
    assert store.latest("https://e.example/59") is not None


async def test_replay_miss_is_clear(tmp_path: Path) -> None:
    fetcher = ReplayFetcher(SnapshotStore(tmp_path))
    with pytest.raises(ReplayMiss, match="no stored snapshot"):
        await fetcher.fetch("https://nowhere.example/", deadline_s=1)


def test_replay_needs_a_store() -> None:
    with pytest.raises(ConfigError):
        build_fetch_chain(FetchSettings(mode="replay"))


async def test_live_then_replay_round_trip(site: Site, tmp_path: Path) -> None:
    urls = [site.url("/article"), site.url("/report.pdf"), site.url("/sjis"), site.url("/chain?n=2")]
    live = build_fetch_chain(
        FetchSettings(browser="never"), [site.base], snapshot_dir=tmp_path, extract_workers=0
    )
    try:
        recorded = {u: await live.read(u) for u in urls}
    finally:
        await live.aclose()
    assert ARTICLE_SENTENCE in recorded[urls[0]].text.text
    assert PDF_SENTENCE in recorded[urls[1]].text.text
    for result in recorded.values():
        assert result.snapshot is not None
        assert result.snapshot.extractor_version == EXTRACTOR_VERSION
        assert result.snapshot.fetcher == "httpx"

    hits_before = dict(site.hits)
    replay = build_fetch_chain(FetchSettings(mode="replay"), snapshot_dir=tmp_path, extract_workers=0)
    try:
        for u in urls:
            again = await replay.read(u)
            assert again.text == recorded[u].text  # identical text, title, kind, flags
            assert again.page.fetcher == "replay"
            assert again.page.final_url == recorded[u].page.final_url
            assert again.snapshot is not None and again.snapshot.sha256 == recorded[u].snapshot.sha256  # type: ignore[union-attr]
        with pytest.raises(ReplayMiss):
            await replay.read(site.url("/never-fetched"))
    finally:
        await replay.aclose()
    assert site.hits == hits_before  # replay never touched the network
