"""The extractor answer parser: every variant a model writes, and garbage, without raising."""

from __future__ import annotations

import pytest
from fathom.tools.extract import assemble_answer, parse_answer
from hypothesis import given
from hypothesis import strategies as st


def test_plain_three_sections() -> None:
    text = (
        "Rationale: The page is about the Eiffel Tower, which is the goal.\n"
        "Evidence:\n"
        "The tower is 330 metres tall.\n"
        "It was completed in 1889.\n"
        "Summary: The Eiffel Tower is 330 m tall and opened in 1889."
    )
    p = parse_answer(text)
    assert p.rationale == "The page is about the Eiffel Tower, which is the goal."
    assert p.evidence == ["The tower is 330 metres tall.", "It was completed in 1889."]
    assert p.summary == "The Eiffel Tower is 330 m tall and opened in 1889."
    assert p.complete


@pytest.mark.parametrize(
    "header_r, header_e, header_s",
    [
        ("**Rationale**:", "**Evidence**:", "**Summary**:"),
        ("**Rationale:**", "**Evidence:**", "**Summary:**"),
        ("## Rationale", "## Evidence", "## Summary"),
        ("### Rationale:", "### Evidence:", "### Summary:"),
        ("1. Rationale:", "2. Evidence:", "3. Summary:"),
        ("RATIONALE:", "EVIDENCE:", "SUMMARY:"),
        ("Rationale", "Evidence", "Summary"),
        ("Reasoning:", "Quotes:", "Summary:"),
    ],
)
def test_markdown_header_variants(header_r: str, header_e: str, header_s: str) -> None:
    text = (
        f"{header_r}\nRelevant: it names the capital.\n\n"
        f'{header_e}\n- "Paris is the capital of France."\n* “It has 2.1 million residents.”\n'
        f"> 3) 'Founded in the 3rd century BC.'\n\n"
        f"{header_s}\nParis is the capital."
    )
    p = parse_answer(text)
    assert p.rationale == "Relevant: it names the capital."
    assert p.evidence == [
        "Paris is the capital of France.",
        "It has 2.1 million residents.",
        "3) 'Founded in the 3rd century BC.",
    ] or p.evidence == [
        "Paris is the capital of France.",
        "It has 2.1 million residents.",
        "Founded in the 3rd century BC.",
    ]
    assert p.summary == "Paris is the capital."


def test_bullets_and_numbering_are_stripped() -> None:
    p = parse_answer(
        'Evidence:\n1. "First quote here."\n2) Second quote here.\n• Third quote here.\nSummary: s'
    )
    assert p.evidence == ["First quote here.", "Second quote here.", "Third quote here."]


def test_several_quoted_segments_on_one_line_are_split() -> None:
    p = parse_answer('Evidence: "Alpha beta gamma." "Delta epsilon zeta."\nSummary: ok')
    assert p.evidence == ["Alpha beta gamma.", "Delta epsilon zeta."]


def test_line_starting_with_section_word_is_not_a_header() -> None:
    text = "Rationale: Evidence shows the page is relevant.\nEvidence shows that it is.\nSummary: yes"
    p = parse_answer(text)
    assert p.rationale == "Evidence shows the page is relevant.\nEvidence shows that it is."
    assert not p.has_evidence_section
    assert p.summary == "yes"


def test_inline_sections_on_one_line() -> None:
    p = parse_answer("Rationale: relevant. Evidence: The sky is blue. Summary: Blue sky.")
    assert p.rationale == "relevant."
    assert p.evidence == ["The sky is blue."]
    assert p.summary == "Blue sky."


def test_missing_summary_is_incomplete() -> None:
    p = parse_answer("Rationale: relevant\nEvidence:\nA quote here.")
    assert p.rationale == "relevant"
    assert p.evidence == ["A quote here."]
    assert p.summary is None
    assert not p.complete


def test_none_markers_mean_empty() -> None:
    p = parse_answer("Rationale: Not relevant.\nEvidence:\nNone\nSummary: N/A")
    assert p.evidence == []
    assert p.has_evidence_section
    assert p.summary is None
    assert not p.complete


def test_repeated_answer_keeps_the_first_copy() -> None:
    one = "Rationale: r1\nEvidence:\nq1 quote\nSummary: s1\n"
    two = "Rationale: r2\nEvidence:\nq2 quote\nSummary: s2\n"
    p = parse_answer(one + two)
    assert (p.rationale, p.evidence, p.summary) == ("r1", ["q1 quote"], "s1")


def test_repeated_lines_in_summary_collapse() -> None:
    p = parse_answer("Summary: It is tall.\nIt is tall.\nIt is tall.")
    assert p.summary == "It is tall."


def test_repeated_sentences_on_one_line_collapse() -> None:
    p = parse_answer("Rationale: The page is relevant. The page is relevant. It names the year. The page is")
    assert p.rationale == "The page is relevant. It names the year. The page is"


@pytest.mark.parametrize("garbage", ["", "   ", "\n\n", "lorem ipsum dolor", "***", "::::", "# \n## \n"])
def test_garbage_gives_empty_answer(garbage: str) -> None:
    p = parse_answer(garbage)
    assert p.summary is None and p.evidence == [] and not p.complete


@given(st.text(max_size=400))
def test_parser_never_raises(text: str) -> None:
    p = parse_answer(text)
    assert isinstance(p.evidence, list)


def test_staged_parts_are_cleaned_separately() -> None:
    p = assemble_answer(
        " The page names both years. The page names both years.",
        '- "Won in 1903."\nRelevance: high\n* Won again in 1911.',
        " Summary: 1903 and 1911.",
    )
    assert p.rationale == "The page names both years."
    assert p.evidence == ["Won in 1903.", "Relevance: high", "Won again in 1911."]
    assert p.summary == "1903 and 1911."
    assert p.complete


def test_staged_parts_with_empty_summary_are_incomplete() -> None:
    assert not assemble_answer("r", "q quote", "  ").complete
    assert not assemble_answer("r", "q quote", "***").complete
