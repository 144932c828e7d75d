"""The extractor with the real bundled model (SmolLM2-135M-Instruct) on a real Wikipedia lead, on the
original's free-text protocol (the bundled model's own default, sentence choice, is tested in
``test_extract_choice.py``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fathom.core.config import BUNDLED_MODEL, ExtractSettings, ModelRole, Settings
from fathom.models.bundled import prepare_bundled
from fathom.models.transformers_backend import TransformersBackend
from fathom.tools.extract import EvidenceExtractor, ExtractionCache, format_query_url_result

from tests.shared_data import CORPUS

pytestmark = pytest.mark.slow

DATA = CORPUS / "wikipedia_vital_summaries.json"
URL = "http://127.0.0.1:9/wiki/Marie_Curie"
GOAL = "When did Marie Curie win the Nobel Prize?"
# Small budgets keep the test quick on a busy CPU; the flow is the same as with 1024.
ROLE = ModelRole(model=BUNDLED_MODEL, temperature=0.0, max_new_tokens=120, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def page_text() -> str:
    return str(json.loads(DATA.read_text(encoding="utf-8"))["Marie Curie"]["extract"])


@pytest.fixture
async def backend() -> AsyncIterator[TransformersBackend]:
    path = prepare_bundled(Settings().models_dir)
    b = TransformersBackend(str(path), name=BUNDLED_MODEL)
    yield b
    await b.aclose()


async def test_real_model_gives_three_grounded_parts_and_caches(
    backend: TransformersBackend, page_text: str, tmp_path: Path
) -> None:
    cache = ExtractionCache.in_dir(tmp_path)
    extractor = EvidenceExtractor(backend, ROLE, ExtractSettings(quote_protocol="free_text"), cache)

    ev = await extractor.extract(URL, GOAL, page_text, page_sha256="0" * 64)

    assert ev.method == "extract" and 1 <= ev.attempts <= 3
    assert ev.rationale.strip() and ev.summary.strip()
    assert ev.evidence, "the model's quotes or the page's own sentences"
    for quote in ev.evidence:
        assert quote in page_text  # verbatim: every kept quote is a span of the page
    assert ev.evidence_source in ("model", "lexical")
    out = format_query_url_result(URL, GOAL, ev)
    assert out.startswith(f"URL: {URL}\nGoal: {GOAL}\n\nRationale: ")
    assert out.index("Rationale:") < out.index("Evidence") < out.index("Summary:")

    # Same page, same goal, same model and prompt version: served from the cache, not generated.
    again = await extractor.extract(URL, GOAL, page_text, page_sha256="0" * 64)
    assert again.cached and not ev.cached
    assert (again.rationale, again.evidence, again.summary) == (ev.rationale, ev.evidence, ev.summary)
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
