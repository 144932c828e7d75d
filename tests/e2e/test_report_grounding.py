"""The demo question through the real local runtime in report mode (bundled model, shipped sample
corpus on the local web, real fetchers, SQLite), then every sentence of the report body checked
against the stored snapshots of the pages it cites."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
from fathom.agent.trajectory import Trajectory
from fathom.core.config import AgentSettings, ExtractSettings, FetchSettings, Settings
from fathom.research.runtime import LocalRuntime
from fathom.synthesis.citations import url_key
from fathom.synthesis.grounding import grounding, is_placeholder
from fathom.synthesis.report import Report
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.content import read_page
from fathom.tools.fetch.snapshots import SnapshotStore

from tests.synthesis.claims import LIST_MARK_RE, cited_claims

# The module fixture runs a whole job on the CPU: give it room beyond the default per-test limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DEMO_QUESTION = "Which country is the Eiffel Tower in, and who designed it?"  # Makefile DEMO_QUESTION

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
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    data_dir = tmp_path_factory.mktemp("grounding-data")
    # Extraction cache off: what is checked is this code's extraction, not a stored older one.
    # Four guided turns (search, read, read, answer: two pages to cite) keep the CPU run short; the
    # protocol, the fetchers, the extractor and the synthesizer are the demo's.
    settings = Settings(data_dir=data_dir, extract=ExtractSettings(cache=False),
                        agent=AgentSettings(guided_max_turns=4))

    async def run() -> Run:
        async with LocalRuntime(settings) as rt:
            job_id = await rt.service.submit(DEMO_QUESTION, "report")
            result = await rt.service.run(job_id)
            assert result.report is not None and result.report_paths is not None, result.trajectory.meta
            markdown = result.report_paths[0].read_text(encoding="utf-8")
            return Run(rt.settings, result.report, markdown, result.trajectory)

    return asyncio.run(run())


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
