"""The pure reading behind the guided policy: tool responses in, quotes, candidate answers and
their support out."""

from __future__ import annotations

import pytest
from fathom.agent import support as sup
from fathom.tools.extract import Evidence, format_query_url_result
from fathom.tools.search.base import SearchHit, format_results

SEA = "Which sea does the river that flows through Vienna flow into?"
HITS = [SearchHit("K2", "https://mountains.example/k2", "K2 facts"),
        SearchHit("Everest", "https://mountains.example/everest", "Everest facts")]


def test_verified_quotes_are_the_quoted_evidence_lines_and_never_the_placeholder() -> None:
    quotes = ['The Danube flows into the Black Sea.', 'It is 2,850 kilometres "long".']
    text = format_query_url_result("https://r.example/", "goal", Evidence(
        rationale="Evidence: the page is about rivers.", evidence=quotes, summary="Summary line.",
        dropped_quotes=0, method="extract", attempts=1, evidence_source="lexical"))
    assert sup.verified_quotes(text) == quotes
    nothing = format_query_url_result("https://r.example/", "goal", Evidence(
        rationale="", evidence=[], summary="", dropped_quotes=0, method="extract", attempts=1,
        evidence_source="none"))
    assert "None found on the page." in nothing and sup.verified_quotes(nothing) == []
    assert [h.url for h in sup.parse_hits(format_results("q", HITS))] == [h.url for h in HITS]
    assert [h.title for h in sup.parse_hits(format_results("q", HITS))] == ["K2", "Everest"]


def test_quote_spans_are_verbatim_names_dates_and_numbers() -> None:
    quote = ("On December 28, 1846, Iowa became the 29th state in the Union, and the Society for the "
             "Exploration of Psychotherapy Integration has 1,200 members.")
    spans = [(s.text, s.kind) for s in sup.quote_spans(quote)]
    assert spans == [("December 28, 1846", "date"), ("1,200", "number"), ("Iowa", "name"), ("Union", "name"),
                     ("Society for the Exploration of Psychotherapy Integration", "name")]
    assert all(s.text in quote for s in sup.quote_spans(quote))
    # A page title run into its first sentence names the thing once.
    doubled = "Montana Rifle Company Montana Rifle Company is an American maker of rifles."
    assert [s.text for s in sup.quote_spans(doubled)] == ["Montana Rifle Company", "American"]


# --- what an answer may be ------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    "", "   ", "Page 1: Page 1: the page says", SEA,
    "river Vienna", "https://rivers.example/danube", "www.danube.example", "None found on the page.",
    "unknown", "(none given)", "Summary: the Black Sea", "The page text is a summary of the page.",
    "the Black Sea, which the Danube reaches after flowing through ten countries of central Europe",
    "\\boxed{Black Sea}", "...",
])
def test_junk_answers_are_rejected(answer: str) -> None:
    assert sup.junk_reason(answer, SEA) is not None


@pytest.mark.parametrize("answer", ["Black Sea", "the Black Sea", "2,850", "Lino Lacedelli"])
def test_real_answers_pass(answer: str) -> None:
    assert sup.junk_reason(answer, SEA) is None


def test_answer_kind_follows_the_first_question_phrase() -> None:
    assert sup.answer_kind("Who was president when Iowa became a state?") == "name"
    assert sup.answer_kind("When did Iowa become a state?") == "year"
    assert sup.answer_kind("How many people live in the city where X was born?") == "number"
    assert sup.answer_kind(SEA) == "any"
    assert sup.focus_terms("Who directed the film that was shot in Leland in 1986?") == {"direc", "film"}


def test_the_question_word_is_the_interrogative_not_a_relative_pronoun() -> None:
    late = 'Terry McGurrin was the story editor for the show "Scaredy Squirrel" which was written by who?'
    wh = sup.question_word(late)
    assert wh is not None and wh.group() == "who"
    assert sup.focus_terms(late) == {"writt"} and sup.answer_kind(late) == "name"
    formed = "The Women's National Basketball League includes the Adelaide team that was formed in what year?"
    assert sup.answer_kind(formed) == "year" and sup.focus_terms(formed) == {"forme", "year"}
    census = "At the 2011 census, what was the population of the city where Kerry Saxby-Junna was born?"
    wh = sup.question_word(census)
    assert wh is not None and wh.group() == "what"
    assert sup.answer_kind(census) == "number"


def test_a_page_about_a_name_the_question_gives_links_the_chain() -> None:
    question = 'Terry McGurrin was the story editor for the show "Scaredy Squirrel" which was written by who?'
    editor = sup.PageRead("https://w.example/terry", "Terry McGurrin", (
        'He recently wrapped up as the story editor for the new 2011 YTV show "Scaredy Squirrel".',),
        question)
    series = sup.PageRead("https://w.example/scaredy", "Scaredy Squirrel", (
        "Scaredy Squirrel is a children's book series written and illustrated by French-Canadian author "
        "Mélanie Watt.",), question)
    # Alone, the first page names a channel near most of the question's words, but not the writer.
    assert not any(c.supported(0.75) for c in sup.answer_candidates(question, [editor]))
    best, *rest = sup.answer_candidates(question, [editor, series])
    assert best.text == "Mélanie Watt" and best.supported(0.75) and best.coverage == 1.0
    assert "French-Canadian" not in [c.text for c in rest]  # a nationality before a noun is no "who"
