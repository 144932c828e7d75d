"""Quote grounding: kept quotes are verbatim page spans; fabricated ones are dropped and counted."""

from __future__ import annotations

from fathom.tools.extract import check_quotes, format_query_url_result, relevant_sentences
from fathom.tools.extract.evidence import Evidence
from fathom.tools.extract.verify import normalise, ranked_sentences
from hypothesis import given
from hypothesis import strategies as st

PAGE = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.\n"
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889.\n\n"
    'Locally nicknamed “La dame de fer” (French for "Iron Lady"), it was constructed as the '
    "centrepiece of the 1889 World's Fair.   Its height is 330 metres — about the same as an "
    "81-storey building."
)


def test_exact_quote_is_kept() -> None:
    c = check_quotes(["It is named after the engineer Gustave Eiffel"], PAGE)
    assert c.kept == ["It is named after the engineer Gustave Eiffel"]
    assert c.dropped == []


def test_fabricated_quote_is_dropped_and_counted() -> None:
    c = check_quotes(["The tower was painted gold in 1999.", "Its height is 330 metres"], PAGE)
    assert c.kept == ["Its height is 330 metres"]
    assert c.dropped == ["The tower was painted gold in 1999."]


def test_light_normalisation_maps_back_to_the_page_span() -> None:
    # Case, whitespace runs, straight vs curly quotes and dashes differ; the kept text is the page's.
    c = check_quotes(['locally nicknamed "la dame de fer"', "330 metres - about the same"], PAGE)
    assert c.kept == ["Locally nicknamed “La dame de fer”", "330 metres — about the same"]
    assert all(k in PAGE for k in c.kept)


def test_quote_across_whitespace_runs_keeps_the_page_whitespace() -> None:
    c = check_quotes(["built the tower from 1887 to 1889. Locally"], PAGE)
    assert c.kept == ["built the tower from 1887 to 1889.\n\nLocally"]
    c = check_quotes(["the centrepiece of the 1889 World's Fair. Its height"], PAGE)
    assert c.kept == ["the centrepiece of the 1889 World's Fair.   Its height"]


def test_trailing_punctuation_added_by_model_is_tolerated() -> None:
    c = check_quotes(["named after the engineer Gustave Eiffel."], PAGE)
    assert c.kept == ["named after the engineer Gustave Eiffel"]


def test_ellipsis_pieces_must_occur_in_order() -> None:
    ok = check_quotes(["The Eiffel Tower is a wrought-iron ... in Paris, France"], PAGE)
    assert ok.kept == ["The Eiffel Tower is a wrought-iron … in Paris, France"]
    bad = check_quotes(["in Paris, France … The Eiffel Tower is a wrought-iron"], PAGE)
    assert bad.kept == [] and len(bad.dropped) == 1


def test_too_short_or_empty_quotes_are_dropped() -> None:
    c = check_quotes(["It", "...", "—"], PAGE)
    assert c.kept == [] and len(c.dropped) == 3


def test_duplicates_are_kept_once() -> None:
    c = check_quotes(["Gustave Eiffel", "gustave eiffel"], PAGE)
    assert c.kept == ["Gustave Eiffel"] and c.dropped == []


@given(st.text(min_size=1, max_size=300), st.integers(0, 299), st.integers(1, 80))
def test_any_substring_is_found_verbatim(page: str, start: int, length: int) -> None:
    quote = page[start : start + length]
    c = check_quotes([quote], page)
    for kept in c.kept:
        assert kept in page
    if (
        len(normalise(quote)) >= 4
        and any(ch.isalnum() for ch in quote)
        and "..." not in quote
        and "…" not in quote
    ):
        assert len(c.kept) == 1


def test_relevant_sentences_are_page_spans_ranked_by_overlap() -> None:
    out = relevant_sentences(PAGE, "What is its height in metres?", k=1)
    assert out == ["Its height is 330 metres — about the same as an 81-storey building."]
    for s in relevant_sentences(PAGE, "engineer who built the tower", k=3):
        assert s in PAGE


def test_relevant_sentences_with_no_overlap_is_empty() -> None:
    assert relevant_sentences(PAGE, "quantum chromodynamics", k=3) == []


# Sentences as real pages give them: a heading, a caption, then the article's sentences.
ORGAN_PAGE = (
    "Gallbladder\n"
    "Gallbladder diagram\n"
    "In vertebrates, the gallbladder is a small hollow organ where bile is stored before it is "
    "released into the small intestine.\n"
    "In humans, the pear-shaped gallbladder lies beneath the liver.\n"
    "Hop plants are grown in several countries."
)


def test_ranked_sentences_are_best_first_and_skip_headings() -> None:
    out = ranked_sentences(ORGAN_PAGE, "Where is the gall bladder situated in the human body?", 5)
    # "gall bladder" meets "gallbladder", "humans" meets "human"; headings and captions are skipped.
    assert out[0] == "In humans, the pear-shaped gallbladder lies beneath the liver."
    assert "Gallbladder" not in out and "Gallbladder diagram" not in out
    assert all(s in ORGAN_PAGE for s in out)
    assert ranked_sentences(ORGAN_PAGE, "Which countries grow hops?", 1) == [
        "Hop plants are grown in several countries."
    ]


def test_a_heading_is_quoted_only_when_no_sentence_shares_a_goal_word() -> None:
    assert ranked_sentences("Gallbladder diagram\nThe liver makes bile.", "gallbladder", 3) == [
        "Gallbladder diagram"
    ]


def test_format_has_url_goal_and_three_parts_in_order() -> None:
    ev = Evidence(
        rationale="Relevant.",
        evidence=["Its height is 330 metres"],
        summary="330 m.",
        dropped_quotes=1,
        method="extract",
        attempts=1,
    )
    out = format_query_url_result("https://example.org/eiffel", "height of the tower", ev)
    lines = out.splitlines()
    assert lines[0] == "URL: https://example.org/eiffel"
    assert lines[1] == "Goal: height of the tower"
    r, e, s = (
        out.index("Rationale: Relevant."),
        out.index('Evidence:\n"Its height is 330 metres"'),
        out.index("Summary: 330 m."),
    )
    assert r < e < s


def test_format_marks_lexical_evidence() -> None:
    ev = Evidence(
        rationale="",
        evidence=[],
        summary="",
        dropped_quotes=0,
        method="truncate",
        attempts=3,
        evidence_source="none",
    )
    out = format_query_url_result("u", "g", ev)
    assert "None found on the page." in out and "Rationale: (none given)" in out
    lex = Evidence(
        rationale="r",
        evidence=["x y z"],
        summary="s",
        dropped_quotes=2,
        method="extract",
        attempts=1,
        evidence_source="lexical",
    )
    assert "word overlap" in format_query_url_result("u", "g", lex)
