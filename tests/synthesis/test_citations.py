from __future__ import annotations

from fathom.synthesis.citations import check_citations, url_key
from fathom.synthesis.protocol import citable_urls

from .traces import (
    ESA,
    MIRROR,
    MISSING,
    NASA,
    STSCI,
    WIKI,
    build_trajectory,
    trajectory_with_failed_and_empty_reads,
)

FAKE = "https://www.invented-space-news.com/webb-launch"

REPORT = f"""# The James Webb Space Telescope: launch, deployment and first light

## Executive Summary

- Webb launched on 25 December 2021 on an Ariane 5 rocket. [{WIKI}]
- Its first deep field showed thousands of galaxies. [{STSCI}]
- The precise launch saved fuel for more than ten years of science. [{FAKE}]

## S1. Launch and deployment

Webb lifted off from Kourou, French Guiana on 25 December 2021. [{WIKI}] The observatory is led \
by NASA with ESA and the Canadian Space Agency. [{NASA.rstrip('/')}] Europe supplied the launch \
vehicle and the NIRSpec instrument. [{ESA}, {FAKE}] A rival outlet claimed a delay of one week. \
[{FAKE}]

| Quantity | Value |
| --- | --- |
| Mirror diameter | 6.5 m [{WIKI}] |
| Segments | 18 |

The deployment took about a month and ended at the L2 point, as [the agency]({FAKE}) explained.

## S2. First images

The first deep field of SMACS 0723 was released on 12 July 2022. [{STSCI}]
It shows the cluster as it was 4.6 billion years ago, see also https://fake-mirror.example.biz/smacs.

## Conclusion

Webb's launch was flawless and its first images were spectacular. [{WIKI}/] [{STSCI}]
More observations will follow in the coming years.

## Sources used

1. {WIKI}
2. {FAKE}
3. {WIKI}
"""


def test_fake_citations_are_removed_counted_and_valid_ones_kept() -> None:
    allowed = citable_urls(build_trajectory())
    check = check_citations(REPORT, allowed)
    assert FAKE not in check.markdown
    assert "fake-mirror.example.biz" not in check.markdown
    # three bracketed [FAKE] (one shared with ESA), one markdown link, one bare URL, and NASA, a
    # page only listed in search results; the model's own Sources list is replaced, not counted
    assert check.invalid_removed == 6
    assert check.invalid_urls == [FAKE, NASA.rstrip("/"), "https://fake-mirror.example.biz/smacs"]
    assert "as the agency explained" in check.markdown  # the link text survives, its target does not
    assert f"[{ESA}]" in check.markdown
    # a citation written with a trailing slash is matched and rewritten to the trace spelling
    assert f"[{WIKI}/]" not in check.markdown and url_key(WIKI + "/") == url_key(WIKI)
    assert f"[{WIKI}]" in check.markdown


def test_sources_section_is_rebuilt_from_valid_citations_deduplicated() -> None:
    check = check_citations(REPORT, citable_urls(build_trajectory()))
    assert check.sources == [WIKI, STSCI, ESA]
    tail = check.markdown.split("## Sources used\n\n", 1)[1]
    assert tail.strip().splitlines() == [f"- {u}" for u in check.sources]
    assert check.markdown.count("## Sources used") == 1


def test_per_section_counts_and_uncited_sentences() -> None:
    check = check_citations(REPORT, citable_urls(build_trajectory()))
    per = check.citations_per_section
    assert per["Executive Summary"] == 2
    assert per["S1. Launch and deployment"] == 3  # WIKI, ESA, WIKI in the table (NASA was only a hit)
    assert per["S2. First images"] == 1
    assert per["Conclusion"] == 2
    titles = [s.title for s in check.sections]
    assert titles[-1] == "Sources used"
    s1 = next(s for s in check.sections if s.title.startswith("S1"))
    assert s1.citations == [WIKI, ESA, WIKI]
    uncited = check.uncited_sentences
    assert "The precise launch saved fuel for more than ten years of science." in uncited
    assert "A rival outlet claimed a delay of one week." in uncited
    assert "The observatory is led by NASA with ESA and the Canadian Space Agency." in uncited
    assert any(s.startswith("The deployment took about a month") for s in uncited)
    assert any(s.startswith("It shows the cluster as it was 4.6 billion") for s in uncited)
    assert "More observations will follow in the coming years." in uncited
    # headings, table rows and the Sources list are never counted
    assert not any("Mirror diameter" in s or "Launch and deployment" in s for s in uncited)
    assert check.sentences_without_citation == 6 == len(uncited)
    assert 100 < check.word_count < 250


def test_citation_after_the_full_stop_belongs_to_the_sentence_before() -> None:
    md = f"## A\n\nFirst claim here today. [{WIKI}] Second claim made here [{STSCI}]. Third one is bare."
    check = check_citations(md, {WIKI, STSCI})
    assert check.uncited_sentences == ["Third one is bare."]
    assert check.invalid_removed == 0


def test_report_without_any_valid_citation_still_gets_a_sources_section() -> None:
    check = check_citations(f"## A\n\nOnly an invented source is cited. [{FAKE}]", {WIKI})
    assert check.sources == []
    assert check.invalid_removed == 1
    assert "## Sources used\n\n- (no sources cited)" in check.markdown
    assert check.uncited_sentences == ["Only an invented source is cited."]


def test_a_page_that_failed_to_load_cannot_be_cited() -> None:
    """A URL the model invented got a 404; the error text named it and a mirror. A report that
    cites either loses the citation, and the removal is counted."""
    allowed = citable_urls(trajectory_with_failed_and_empty_reads())
    md = (f"## S1. Launch\n\nThe launch slipped by a week. [{MISSING}] A mirror confirms it. [{MIRROR}]\n"
          f"Webb launched on 25 December 2021. [{WIKI}]\n")
    check = check_citations(md, allowed)
    assert check.invalid_removed == 2 and check.invalid_urls == [MISSING, MIRROR]
    assert MISSING not in check.markdown and MIRROR not in check.markdown
    assert check.sources == [WIKI]
    assert check.uncited_sentences == ["The launch slipped by a week.", "A mirror confirms it."]
