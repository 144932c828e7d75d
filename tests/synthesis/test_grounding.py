"""The one check every guided report sentence passes: verbatim page words, or supported by them."""

from __future__ import annotations

from fathom.synthesis.grounding import (
    grounding,
    is_placeholder,
    is_verbatim,
    page_form,
    quote_sentences,
    split_at_page_lines,
    support,
)

PAGE = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.\n"
    "It is named after the engineer Gustave Eiffel , whose company designed and built the tower "
    "from 1887 to 1889."
)


def test_verbatim_ignores_only_whitespace_runs_and_spaces_before_punctuation() -> None:
    assert is_verbatim("It is named after the engineer Gustave Eiffel, whose company designed", PAGE)
    assert is_verbatim("lattice tower on the Champ de Mars in Paris,\n  France.", PAGE)
    assert not is_verbatim("The Eiffel Tower is a steel lattice tower.", PAGE)
    assert not is_verbatim("the eiffel tower is a wrought-iron lattice tower", PAGE)  # case counts
    assert page_form("a  b ,\tc .") == "a b, c."


def test_a_generated_sentence_is_kept_only_where_the_page_supports_its_words() -> None:
    assert grounding("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
                     "France.", PAGE) == "verbatim"
    assert grounding("Gustave Eiffel's company designed and built the tower in Paris.", PAGE) == "supported"
    # an invented designer and date: most content words are not on the page
    assert grounding("The tower was designed by Charles Garnier and opened in 1925 in Lyon.", PAGE) is None
    # content words are those longer than three letters: "built", "between", "1887", "1889"
    assert support("Built between 1887 and 1889.", PAGE) == 0.75
    assert grounding("It is so.", PAGE) is None  # no content word at all: nothing to support


def test_placeholders_and_canned_findings_are_recognised_and_never_grounded() -> None:
    for text in ("None found on the page.", "(none given)", "No relevant information about the goal.",
                 "none", "N/A", "Eiffel Tower is among the sources found.",
                 "Read the cited sources in full before acting on this summary.",
                 "The page has no readable text."):
        assert is_placeholder(text), text
        assert grounding(text, text) is None  # even where the placeholder is itself the "page"
    assert not is_placeholder("The Eiffel Tower is in Paris, France.")


def test_quote_sentences_are_whole_printable_spans_of_the_quote() -> None:
    quote = ("named after the engineer Gustave Eiffel. Gustave Eiffel's company built the tower "
             "from 1887 to 1889. See [1] for the  full history of it. The tower is 330 m (1,083 ft) tall "
             "… Its base is square, 125 metres on a side. Visit https://toureiffel.paris for tickets now. "
             "1. A numbered item stands alone. And then the page")
    assert quote_sentences(quote) == [
        "Gustave Eiffel's company built the tower from 1887 to 1889.",
        "Its base is square, 125 metres on a side.",
        "A numbered item stands alone.",
    ]
    # a lowercase start is a fragment; "The tower is 330 m ... tall" lacks its full stop before the
    # ellipsis; brackets, URLs, a bare list number and the unfinished tail are left out, not edited
    for s in quote_sentences(quote):
        assert is_verbatim(s, quote)
    assert quote_sentences("None found on the page.") == []


def test_a_heading_run_into_the_sentence_below_is_cut_at_the_pages_line_break() -> None:
    page = "Eiffel Tower\nThe Eiffel Tower is a lattice tower on the Champ de Mars in Paris, France.\nMore."
    joined = "Eiffel Tower The Eiffel Tower is a lattice tower on the Champ de Mars in Paris, France."
    assert is_verbatim(joined, page)  # true to the words, but the heading is not part of the sentence
    assert split_at_page_lines(joined, page) == [
        "Eiffel Tower", "The Eiffel Tower is a lattice tower on the Champ de Mars in Paris, France."
    ]
    assert split_at_page_lines("The Eiffel Tower is in Paris.", page) == []  # not on the page
    assert split_at_page_lines("a lattice tower", page) == ["a lattice tower"]
