"""``Toolbox`` end to end on a real local web: real search index, real HTTP server on 127.0.0.1,
real fetch chain (httpx, and headless Chromium for script-built pages), real bundled extractor."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fathom.core.config import BUNDLED_MODEL, FetchSettings, ModelRole, SearchSettings, Settings
from fathom.corpus.build import build_corpus_from_documents
from fathom.corpus.documents import Document, make_document
from fathom.corpus.web import LocalWeb
from fathom.models.bundled import prepare_bundled
from fathom.models.transformers_backend import TransformersBackend
from fathom.tools.base import TOOL_SPECS, ToolRunner
from fathom.tools.extract.verify import normalise
from fathom.tools.toolbox import ArgumentError, Toolbox, build_toolbox, parse_top_k

from tests.shared_data import CORPUS

DATA = CORPUS / "wikipedia_vital_summaries.json"
TITLES = [
    "Marie Curie",
    "Albert Einstein",
    "Eiffel Tower",
    "Mount Everest",
    "Amazon River",
    "Isaac Newton",
    "Great Wall of China",
    "Charles Darwin",
    "Pacific Ocean",
    "Leonardo da Vinci",
    "Moon",
    "Sahara",
    "Nile",
    "Galileo Galilei",
    "Ada Lovelace",
    "Alan Turing",
    "Wolfgang Amadeus Mozart",
    "Jupiter",
]
JS_SHARE = 0.5


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    return [make_document(t, data[t]["extract"], "wikipedia_vital") for t in TITLES if t in data]


@pytest.fixture(scope="module")
def local_web(documents: list[Document], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWeb]:
    corpus_dir = tmp_path_factory.mktemp("toolbox") / "corpus"
    build_corpus_from_documents(documents, corpus_dir)
    with LocalWeb(corpus_dir, js_share=JS_SHARE) as web:
        yield web


@pytest.fixture(scope="module")
def extractor_backend() -> Iterator[TransformersBackend]:
    # Shared by the tests of this module; the toolbox does not own it (and so does not close it).
    yield TransformersBackend(str(prepare_bundled(Settings().models_dir)), name=BUNDLED_MODEL)


@pytest.fixture
async def toolbox(
    local_web: LocalWeb, extractor_backend: TransformersBackend, tmp_path: Path
) -> AsyncIterator[Toolbox]:
    settings = Settings(
        cache_dir=tmp_path / "cache",
        data_dir=tmp_path / "data",
        search=SearchSettings(backend="local", index_dir=local_web.corpus.path),
        fetch=FetchSettings(browser="auto", deadline_s=20, browser_deadline_s=40),
        # Small answers keep the real model quick on a busy CPU; the flow is the one of 1024.
        extractor=ModelRole(model=BUNDLED_MODEL, temperature=0.0, max_new_tokens=64, repetition_penalty=1.0),
    )
    tb = build_toolbox(settings, local_web_base=local_web.base_url, extractor_backend=extractor_backend)
    yield tb
    await tb.aclose()


def _doc(documents: list[Document], web: LocalWeb, *, js: bool) -> Document:
    return next(d for d in documents if web.is_js(d.id) == js and len(d.text) > 200)


def test_toolbox_is_a_tool_runner(toolbox: Toolbox) -> None:
    assert isinstance(toolbox, ToolRunner)
    assert toolbox.specs == TOOL_SPECS


async def test_search_urls_returns_numbered_markdown_with_local_urls(
    toolbox: Toolbox, local_web: LocalWeb
) -> None:
    r = await toolbox.call("search_urls", {"query": "Marie Curie radioactivity Nobel Prize", "top_k": 3})
    assert r.ok
    assert r.text.startswith("A search for 'Marie Curie radioactivity Nobel Prize' found")
    assert "1. [Marie Curie](" + local_web.base_url + "/wiki/" in r.text
    assert r.meta["hits"] == len(r.meta["urls"]) <= 3
    assert all(u.startswith(local_web.base_url + "/wiki/") for u in r.meta["urls"])


async def test_search_urls_with_no_hits(toolbox: Toolbox) -> None:
    r = await toolbox.call("search_urls", {"query": "zzzqqqxxv"})
    assert r.ok and r.meta["hits"] == 0 and "No results found" in r.text


@pytest.mark.parametrize("value, expected", [(None, 10), (3, 3), ("5", 5), (7.0, 7), (20, 20), ("  12 ", 12)])
def test_top_k_within_the_limit(value: object, expected: int) -> None:
    assert parse_top_k(value) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        (0, "must be between 1 and 20, got 0"),
        (-4, "must be between 1 and 20, got -4"),
        (21, "must be between 1 and 20, got 21"),
        (50, "must be between 1 and 20, got 50"),
        ("30", "must be between 1 and 20, got 30"),
        (7.9, "must be an integer"),
        ("many", "must be an integer"),
        (True, "must be an integer"),
        (float("nan"), "must be an integer"),
    ],
)
def test_top_k_out_of_range_is_refused_not_clamped(value: object, fragment: str) -> None:
    with pytest.raises(ArgumentError, match=fragment):
        parse_top_k(value)


def test_the_toolbox_and_the_agent_validator_share_one_top_k_limit() -> None:
    from fathom.agent import protocol

    for k in range(-2, 60):
        body = {"name": "search_urls", "arguments": {"query": "x", "top_k": k}}
        call = protocol.parse_call(json.dumps(body))
        try:
            parse_top_k(k)
            toolbox_ok = True
        except ArgumentError:
            toolbox_ok = False
        assert (call.error is None) == toolbox_ok, k


@pytest.mark.parametrize(
    "name, arguments, fragment",
    [
        ("search_urls", {}, "missing required argument 'query'"),
        ("search_urls", {"query": "   "}, "argument 'query' is empty"),
        ("search_urls", {"query": 42}, "argument 'query' must be a string"),
        ("search_urls", {"query": "x", "top_k": "many"}, "argument 'top_k' must be an integer"),
        ("search_urls", {"query": "x", "top_k": True}, "argument 'top_k' must be an integer"),
        ("search_urls", {"query": "x", "top_k": 21}, "argument 'top_k' must be between 1 and 20, got 21"),
        ("search_urls", {"query": "x" * 1001}, "too long"),
        ("query_url", {"url": "http://example.org/"}, "missing required argument 'goal'"),
        ("query_url", {"goal": "g"}, "missing required argument 'url'"),
        ("query_url", {"url": ["http://example.org/"], "goal": "g"}, "must be a string"),
        ("fetch_page", {"url": "http://example.org/"}, "unknown tool 'fetch_page'"),
    ],
)
async def test_bad_calls_are_tool_errors_not_exceptions(
    toolbox: Toolbox, name: str, arguments: dict[str, object], fragment: str
) -> None:
    r = await toolbox.call(name, arguments)
    assert not r.ok and fragment in r.text and r.text.startswith(f"Error ({name}):")


async def test_arguments_not_an_object(toolbox: Toolbox) -> None:
    r = await toolbox.call("search_urls", ["query"])  # type: ignore[arg-type]
    assert not r.ok and "JSON object" in r.text


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://metadata.google.internal/computeMetadata/v1/", "refused"),
        ("http://127.0.0.1:1/", "loopback"),
        ("http://2130706433/", "refused"),
        ("file:///etc/passwd", "scheme"),
    ],
)
async def test_hostile_urls_are_refused_with_the_reason(toolbox: Toolbox, url: str, reason: str) -> None:
    r = await toolbox.call("query_url", {"url": url, "goal": "read the secrets"})
    assert not r.ok
    assert r.meta["error"] == "SSRFError"
    assert "may not be fetched" in r.text and reason in r.text


async def test_missing_page_is_a_clear_error(toolbox: Toolbox, local_web: LocalWeb) -> None:
    url = local_web.base_url + "/wiki/No_such_article-000000"
    r = await toolbox.call("query_url", {"url": url, "goal": "anything"})
    assert not r.ok and "404" in r.text and r.meta["error"] == "FetchError"


async def _assert_query_url(toolbox: Toolbox, url: str, goal: str, fetcher: str) -> None:
    r = await toolbox.call("query_url", {"url": url, "goal": goal})
    assert r.ok, r.text
    assert r.text.startswith(f"URL: {url}\nGoal: {goal}\n\nRationale: ")
    assert r.text.index("Rationale:") < r.text.index("\n\nEvidence") < r.text.index("\n\nSummary: ")
    assert r.meta["fetcher"] == fetcher
    assert r.meta["final_url"] == url and r.meta["status"] == 200
    assert len(r.meta["snapshot_sha256"]) == 64
    assert r.meta["method"] in ("extract", "compress", "truncate")
    assert r.meta["cached"] is False
    # Every quote shown is verbatim text of the page as the tool read it.
    page = await toolbox.reader.read(url, render=(fetcher == "browser"))
    block = r.text.split("\n\nEvidence", 1)[1].split(":\n", 1)[1].split("\n\nSummary: ", 1)[0]
    quotes = [line[1:-1] for line in block.splitlines() if line.startswith('"') and line.endswith('"')]
    assert len(quotes) == r.meta["quotes"]
    for q in quotes:
        for piece in q.split(" … "):
            assert piece in page.text.text or normalise(piece) in normalise(page.text.text)

    again = await toolbox.call("query_url", {"url": url, "goal": goal})
    assert again.ok and again.meta["cached"] is True and again.text == r.text


@pytest.mark.slow
async def test_query_url_on_a_static_page(
    toolbox: Toolbox, local_web: LocalWeb, documents: list[Document]
) -> None:
    doc = _doc(documents, local_web, js=False)
    await _assert_query_url(toolbox, local_web.url_for(doc.id), f"What is {doc.title} known for?", "httpx")


@pytest.mark.slow
async def test_query_url_on_a_script_built_page(
    toolbox: Toolbox, local_web: LocalWeb, documents: list[Document]
) -> None:
    doc = _doc(documents, local_web, js=True)
    await _assert_query_url(toolbox, local_web.url_for(doc.id), f"What is {doc.title} known for?", "browser")


class _DefectiveReader:
    """Stands for a bug below the toolbox (no real part fails this way on purpose)."""

    async def read(self, url: str, *, render: bool | None = None, deadline_s: float | None = None) -> None:
        raise RuntimeError("a defect in the fetch layer")

    async def aclose(self) -> None:
        return None


async def test_a_defect_below_becomes_a_tool_error_not_an_exception(toolbox: Toolbox) -> None:
    broken = Toolbox(toolbox.search, _DefectiveReader(), toolbox.extractor, toolbox.settings)  # type: ignore[arg-type]
    r = await broken.call("query_url", {"url": "https://example.org/", "goal": "g"})
    assert not r.ok and r.meta["error"] == "RuntimeError" and "internal error" in r.text
