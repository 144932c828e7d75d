"""The demo question through the real CLI in report mode (``demo_job``, conftest.py: bundled model,
shipped sample corpus on the local web, real fetchers, SQLite), then every sentence of the report
body checked against the stored snapshots of the pages it cites."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from fathom.agent.trajectory import Trajectory
from fathom.core.config import FetchSettings, Settings
from fathom.store.db import Database
from fathom.store.repository import JobStore
from fathom.synthesis.citations import url_key
from fathom.synthesis.grounding import grounding, is_placeholder
from fathom.synthesis.report import Report
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.content import read_page
from fathom.tools.fetch.snapshots import SnapshotStore

from tests.e2e.conftest import DemoJob
from tests.synthesis.claims import LIST_MARK_RE, cited_claims

# The session fixture (conftest.py) runs a whole job on the CPU: room beyond the per-test limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# Text seen in reports before the mend: placeholders and canned stand-ins for findings.
_CANNED = ("None found", "(none given)", "is among the sources found", "Read the cited sources in full",
           "No relevant information", "The page has no readable text")


@dataclass
class Run:
    settings: Settings
    report: Report
    markdown: str  # the report file as written
    trajectory: Trajectory


@pytest.fixture(scope="module")
def demo_run(demo_job: DemoJob) -> Run:
    """The demo job's report (as stored), its report file, its trajectory, read back from its store."""
    settings = Settings(data_dir=demo_job.data_dir)
    summary = demo_job.summary
    store = JobStore(Database(settings.resolved_database_url))
    stored = store.get_report(summary["job_id"])
    traj = store.load_trajectory(summary["job_id"])
    assert stored is not None and traj is not None, summary
    markdown = Path(summary["report_markdown"]).read_text(encoding="utf-8")
    return Run(settings, Report.from_dict(stored.data), markdown, traj)


def snapshot_text(store: SnapshotStore, url: str, fetch: FetchSettings) -> tuple[str, str]:
    """(sha256, main text) of the stored snapshot of ``url``, read the way the tool read it."""
    hit = store.latest(url)
    assert hit is not None, f"no stored snapshot of the cited page {url}"
    snap, body = hit
    page = FetchedPage(url=url, final_url=snap.final_url, status=snap.status, content_type=snap.content_type,
                       body=body, fetcher="replay", fetched_at=snap.fetched_at, encoding=snap.encoding,
                       truncated=snap.truncated)
    return snap.sha256, read_page(page, fetch).text


def test_every_report_sentence_is_grounded_in_the_snapshot_of_a_page_it_cites(demo_run: Run) -> None:
    claims, uncited = cited_claims(demo_run.markdown)
    assert claims, demo_run.markdown
    assert uncited == [], "body text without a citation"
    store = SnapshotStore(demo_run.settings.snapshot_dir)
    texts = {u: snapshot_text(store, u, demo_run.settings.fetch)[1] for _, urls in claims for u in urls}
    kinds = []
    for claim, urls in claims:
        assert claim, f"a citation with no sentence before it: {urls}"
        kind = next((k for u in urls if (k := grounding(claim, texts[u])) is not None), None)
        assert kind is not None, f"not on (nor supported by) the cited page {urls}: {claim!r}"
        kinds.append(kind)
    assert "verbatim" in kinds  # each section leads with the page's own words


def test_no_placeholder_or_canned_text_reaches_the_report(demo_run: Run) -> None:
    md = demo_run.markdown
    for canned in _CANNED:
        assert canned.lower() not in md.lower(), canned
    assert not [ln for ln in md.splitlines() if is_placeholder(LIST_MARK_RE.sub("", ln))]


def test_every_cited_url_was_read_successfully_and_its_snapshot_kept(demo_run: Run) -> None:
    report, traj = demo_run.report, demo_run.trajectory
    assert report.sources
    read = {}
    for call in traj.tool_calls:
        if call.name == "query_url" and call.ok and call.result:
            read.setdefault(url_key(call.arguments["url"]), set()).add(call.snapshot_sha256)
    store = SnapshotStore(demo_run.settings.snapshot_dir)
    for url in report.sources:
        assert url_key(url) in read, f"cited but never read: {url}"
        sha, _ = snapshot_text(store, url, demo_run.settings.fetch)
        assert sha in read[url_key(url)]  # the snapshot is the very body the tool read


def test_the_plan_is_not_passed_off_as_the_models(demo_run: Run) -> None:
    report = demo_run.report
    assert report.guided and report.plan == ""  # the bundled model writes no plan
    assert report.guided_plan.startswith("Section map built by the guided writer")


def test_the_report_file_is_the_stored_report(demo_run: Run) -> None:
    assert demo_run.markdown.strip() == demo_run.report.markdown.strip()
    assert Path(demo_run.settings.snapshot_dir).is_dir()
