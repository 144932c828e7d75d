"""The pure parts of guided synthesis: evidence from pages read, cleaning of small-model output,
budgets."""

from __future__ import annotations

from fathom.agent.trajectory import ToolCall
from fathom.synthesis.evidence import collect_evidence, evidence_quotes
from fathom.synthesis.guided import GuidedConfig, clean_generation

from .traces import (
    ECHO,
    ECHO_PAGE_TEXT,
    ESA,
    FAQ,
    PAGE_ECHO,
    PAGE_FAQ,
    PAGE_WIKI,
    STSCI,
    WIKI,
    build_trajectory,
    trajectory_with_failed_and_empty_reads,
)


def test_evidence_is_the_pages_read_in_trace_order_never_search_hits_or_failed_reads() -> None:
    items = collect_evidence(trajectory_with_failed_and_empty_reads())
    assert [e.url for e in items] == [WIKI, STSCI, ESA, FAQ, ECHO]
    wiki = items[0]
    assert wiki.title == "James Webb Space Telescope - Wikipedia"  # from the search hit, not the goal
    assert wiki.sentences(1) == [
        "JWST was launched on 25 December 2021 on an Ariane 5 rocket from Kourou, French Guiana."
    ]
    # only the page's own words: the rationale and summary are the extractor's, not the page's
    assert "describes the launch" not in wiki.grounds and "unfolded in space" not in wiki.grounds
    assert "https://" not in wiki.grounds
    stsci = items[1]
    assert stsci.sentences(3)[2] == "The image shows the galaxy cluster as it appeared 4.6 billion years ago."


def test_placeholders_of_an_empty_extraction_are_no_evidence() -> None:
    assert evidence_quotes(PAGE_FAQ) == []
    faq = next(e for e in collect_evidence(trajectory_with_failed_and_empty_reads()) if e.url == FAQ)
    assert faq.quotes == [] and faq.sentences() == [] and faq.grounds == ""
    assert faq.title == ""  # no page title and no search hit: the writer names it by its host


def test_without_the_page_the_quotes_are_trusted_with_it_each_is_checked() -> None:
    # The rationale imitates the layout; the first Evidence block is taken, as the toolbox writes
    # one. Without the page text nothing can tell the imitation apart ...
    assert evidence_quotes(PAGE_ECHO)[0] == "Webb was launched from Florida in 2019 on a Falcon 9."
    # ... with it (read back from the snapshot), every quote must be on the page.
    def page_texts(call: ToolCall) -> str | None:
        return ECHO_PAGE_TEXT if call.arguments.get("url") == ECHO else None

    echo = next(e for e in collect_evidence(trajectory_with_failed_and_empty_reads(), page_texts)
                if e.url == ECHO)
    assert echo.sentences() == [
        "The telescope lifted off from Europe's Spaceport in Kourou at 12:20 GMT on 25 December 2021."
    ]  # not the invented quote, not the one with brackets, not the fragment cut short
    assert echo.grounds == ECHO_PAGE_TEXT


def test_a_page_read_twice_pools_its_quotes() -> None:
    traj = build_trajectory()
    again = ToolCall(index=9, name="query_url", arguments={"url": WIKI + "/", "goal": "mirror"}, raw="{}",
                     result=PAGE_WIKI.replace("25 December 2021", "Christmas Day 2021"), ok=True)
    traj.steps[2].tool_calls.append(again)
    wiki = next(e for e in collect_evidence(traj) if e.url == WIKI)
    assert len(wiki.quotes) == 5 and any("Christmas Day" in q for q in wiki.quotes)


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


def test_with_the_page_at_hand_a_heading_run_into_a_quote_is_cut_off() -> None:
    traj = build_trajectory()
    wiki_call = traj.steps[1].tool_calls[0]
    wiki_call.result = (wiki_call.result or "").replace(
        '"JWST was launched', '"James Webb Space Telescope JWST was launched')
    page = ("James Webb Space Telescope\nJWST was launched on 25 December 2021 on an Ariane 5 rocket from "
            "Kourou, French Guiana. It arrived at the Sun-Earth L2 Lagrange point in January 2022.")
    wiki = collect_evidence(traj, lambda call: page if call is wiki_call else None)[0]
    assert wiki.sentences() == [
        "JWST was launched on 25 December 2021 on an Ariane 5 rocket from Kourou, French Guiana.",
        "It arrived at the Sun-Earth L2 Lagrange point in January 2022.",
    ]  # the other quotes are not on this (shortened) page, so they go


def test_a_page_title_flattened_into_the_first_sentence_is_taken_off() -> None:
    traj = build_trajectory()
    wiki_call = traj.steps[1].tool_calls[0]
    wiki_call.result = (wiki_call.result or "").replace(
        '"JWST was launched', '"James Webb Space Telescope JWST was launched')
    page = ("James Webb Space Telescope JWST was launched on 25 December 2021 on an Ariane 5 rocket from "
            "Kourou, French Guiana.")  # a reader that put the heading and the paragraph on one line
    for texts in (None, lambda call: page if call is wiki_call else None):
        wiki = collect_evidence(traj, texts)[0]
        assert wiki.title == "James Webb Space Telescope - Wikipedia"
        assert wiki.sentences(1) == [
            "JWST was launched on 25 December 2021 on an Ariane 5 rocket from Kourou, French Guiana."
        ]
