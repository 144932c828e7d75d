"""Page snapshot provenance and reports."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime

import pytest
from fathom.core.errors import StoreError
from fathom.store import JobStore, ReportInfo

from . import sample


def test_record_snapshot_is_idempotent_and_round_trips(store: JobStore) -> None:
    snap = sample.snapshot()
    assert store.record_snapshot(snap) is True
    assert store.record_snapshot(snap) is False
    assert store.record_snapshot(replace(snap, status=500)) is False  # first provenance kept
    assert store.find_snapshots(sha256=snap.sha256) == [snap]
    assert store.find_snapshots(url=snap.final_url) == [snap]


def test_same_body_under_two_urls_is_two_rows(store: JobStore) -> None:
    a = sample.snapshot("https://a.example/page")
    b = replace(sample.snapshot("https://b.example/mirror"),
                fetched_at=datetime(2025, 3, 2, tzinfo=UTC), truncated=True, encoding=None)
    assert store.record_snapshot(a) and store.record_snapshot(b)
    assert store.find_snapshots(sha256=a.sha256.upper()) == [b, a]  # newest first
    assert store.find_snapshots(sha256=a.sha256, url=b.url) == [b]
    assert store.find_snapshots(url="https://nowhere.example/") == []
    with pytest.raises(StoreError, match="needs"):
        store.find_snapshots()


def test_record_snapshot_dict_accepts_json_form(store: JobStore) -> None:
    snap = sample.snapshot()
    data = asdict(snap) | {"fetched_at": snap.fetched_at.isoformat(), "path": "/snapshots/ab/abab"}
    assert store.record_snapshot_dict(data) is True
    assert store.record_snapshot_dict(asdict(snap)) is False
    naive = asdict(sample.snapshot("https://c.example/")) | {"fetched_at": "2025-03-01T12:30:05.123456"}
    assert store.record_snapshot_dict(naive)
    assert store.find_snapshots(url="https://c.example/")[0].fetched_at == snap.fetched_at  # naive = UTC


@pytest.mark.parametrize(
    ("change", "message"),
    [({"sha256": None}, "lacks sha256"), ({"fetched_at": "yesterday"}, "bad fetched_at"),
     ({"status": "ok"}, "invalid literal"), ({"sha256": "xyz"}, "64 hex digits")],
)
def test_bad_snapshot_dicts_are_store_errors(
    store: JobStore, change: dict[str, object], message: str
) -> None:
    data = asdict(sample.snapshot()) | change
    with pytest.raises(StoreError, match=message):
        store.record_snapshot_dict(data)
    assert store.find_snapshots(url=sample.snapshot().url) == []


REPORT = {
    "title": "Lithium-Ionen-Akkus und der Nobelpreis 2019",
    "sections": [{"heading": "Hintergrund", "text": "… [1]"}, {"heading": "Würdigung", "text": "… [2]"}],
    "citations": [{"n": 1, "url": "https://www.nobelprize.org/"}, {"n": 2, "url": "https://x.example/"}],
    "word_count": 1234,
    "invalid_citations_removed": 2,
    "sentences_without_citation": 5,
    "citations_per_section": {"Hintergrund": 3, "Würdigung": 1},
}


def test_save_and_get_report(store: JobStore) -> None:
    job_id = store.create_job("q", "report")
    assert store.get_report(job_id) is None
    paths = {"markdown": "/data/reports/x/report.md", "json": "/data/reports/x/report.json"}
    store.save_report(job_id, REPORT, "# Bericht\n\nText [1].", paths)
    rep = store.get_report(job_id)
    assert isinstance(rep, ReportInfo)
    assert rep.job_id == job_id and rep.markdown == "# Bericht\n\nText [1]." and rep.data == REPORT
    assert (rep.word_count, rep.invalid_citations_removed, rep.sentences_without_citation) == (1234, 2, 5)
    assert rep.citations_per_section == {"Hintergrund": 3, "Würdigung": 1}
    assert rep.paths == paths and rep.created_at.tzinfo == UTC


def test_saving_again_replaces_the_report(store: JobStore) -> None:
    job_id = store.create_job("q", "report")
    store.save_report(job_id, REPORT, "old")
    store.save_report(job_id, {"title": "new", "words": 3}, "one two three", {"markdown": "/r.md"})
    rep = store.get_report(job_id)
    assert rep is not None
    assert (rep.markdown, rep.data, rep.word_count, rep.invalid_citations_removed) == (
        "one two three", {"title": "new", "words": 3}, 3, 0)
    assert rep.paths == {"markdown": "/r.md"}


def test_word_count_defaults_to_the_markdown(store: JobStore) -> None:
    job_id = store.create_job("q", "report")
    store.save_report(job_id, {"title": "t"}, "four words right here")
    rep = store.get_report(job_id)
    assert rep is not None and rep.word_count == 4 and rep.citations_per_section == {}


def test_report_errors(store: JobStore) -> None:
    with pytest.raises(StoreError, match="no job"):
        store.save_report("missing", REPORT, "md")
    job_id = store.create_job("q", "report")
    with pytest.raises(StoreError, match="not a count"):
        store.save_report(job_id, {"word_count": "many"}, "md")
    assert store.get_report(job_id) is None
