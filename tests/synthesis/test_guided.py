"""The pure parts of guided synthesis: evidence, cleaning of small-model output, budgets."""

from __future__ import annotations

from fathom.synthesis.evidence import collect_evidence, relevance
from fathom.synthesis.guided import GuidedConfig, clean_generation, source_sentences

from .traces import ARIANE, ESA, L2, NASA, PAREN, QUESTION, SMACS, STSCI, WIKI, build_trajectory


def test_evidence_puts_read_pages_first_then_search_hits_in_trace_order() -> None:
    items = collect_evidence(build_trajectory())
    assert [(e.url, e.kind) for e in items] == [
        (WIKI, "page"), (ESA, "page"), (STSCI, "page"),
        (NASA, "search"), (ARIANE, "search"), (SMACS, "search"), (L2, "search"), (PAREN, "search"),
    ]
    wiki = items[0]
    assert wiki.title == "James Webb Space Telescope - Wikipedia"  # from the search hit, not the goal
    assert "gold-plated beryllium" in wiki.text
    assert "URL:" not in wiki.text and "https://" not in wiki.text  # no URLs leak into grounding text
    # the failed fetch of an unknown site is no evidence
    assert all("made-up" not in e.url for e in items)
    assert relevance(QUESTION, wiki.text) > relevance(QUESTION, items[-1].text)


def test_source_sentences_prefer_the_extractors_verbatim_quotes() -> None:
    wiki, _, stsci, *hits = collect_evidence(build_trajectory())
    assert source_sentences(wiki, 1) == [
        "JWST was launched on 25 December 2021 on an Ariane 5 rocket from Kourou, French Guiana."
    ]
    third = source_sentences(stsci, 3)[2]
    assert third == "The image shows the galaxy cluster as it appeared 4.6 billion years ago."
    lagrange = next(e for e in hits if e.url == L2)
    assert source_sentences(lagrange, 2) == [
        "The Sun-Earth L2 point is about 1.5 million kilometres from Earth."
    ]


def test_clean_generation_strips_links_urls_markup_and_repeats() -> None:
    raw = ("## Findings\n- Webb launched in 2021 [https://fake.example.com]. It saw the "
           "[deep field](https://x.org) clearly. It saw the deep field clearly. "
           "The 1.5 m figure is from https://y.org/a. And then it went")
    assert clean_generation(raw, 5) == [
        "Webb launched in 2021.",
        "It saw the deep field clearly.",
        "The 1.5 m figure is from.",
    ]
    assert clean_generation("cut off by the budget in the middle of a long clause", 3) == [
        "cut off by the budget in the middle of a long clause."
    ]
    assert clean_generation("cut off by the budget in the middle of a clause", 3, allow_fragment=False) == []
    assert clean_generation("Too short.", 3) == []


def test_budgets_scale_down_to_the_token_cap() -> None:
    cfg = GuidedConfig(sections=3, section_tokens=100, bullet_tokens=32, recommendation_tokens=70,
                       conclusion_tokens=80, max_total_tokens=300)
    sec, bullet, rec, concl = cfg.budgets(3)
    assert 3 * (sec + bullet) + max(rec, concl) <= 300
    assert GuidedConfig().budgets(3) == (100, 32, 70, 80)  # the defaults fit 600 as they are
    assert GuidedConfig(bullet_tokens=0).budgets(2)[1] == 0
