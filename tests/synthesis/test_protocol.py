from __future__ import annotations

from fathom.synthesis.protocol import (
    SYNTHESIZER_SYSTEM_PROMPT,
    build_prompt,
    citable_urls,
    find_urls,
    normalise_url,
    parse_output,
    reformat_trace,
)

from .traces import (
    ECHO,
    ESA,
    FAQ,
    MIRROR,
    MISSING,
    NASA,
    PAREN,
    QUESTION,
    STSCI,
    WIKI,
    build_trajectory,
    trajectory_with_failed_and_empty_reads,
)


def test_reformat_trace_drops_system_and_think_tags_and_marks_results() -> None:
    text = reformat_trace(build_trajectory())
    assert "persistent web researcher" not in text  # system block removed
    assert "<|im_start|>" not in text and "<|im_end|>" not in text
    assert "<think>" not in text and "</think>" not in text
    assert "<tool_call>" not in text
    assert text.startswith(f"USER: {QUESTION}")
    # reasoning stays, as ASSISTANT turns; tool responses come back as USER turns marked as results
    assert "ASSISTANT: I need the launch facts first, then the first images." in text
    first_call = 'search_urls(query="James Webb Space Telescope launch deployment", top_k=4)'
    assert f"[tool call 1: {first_call}]" in text
    assert "USER: [SEARCH RESULT 1 for search_urls(" in text
    assert f'[SEARCH RESULT 3 for query_url(url="{WIKI}"' in text
    assert "gold-plated beryllium" in text
    assert "could not fetch the page" in text  # failed calls are shown too
    # the list of calls made closes the trace, one numbered line per call
    listing = text.split("TOOL CALLS MADE (6):\n", 1)[1].splitlines()
    assert len(listing) == 6
    assert listing[0].startswith("1. search_urls(query=")
    assert listing[5] == '6. query_url(url="https://made-up.example.net/jwst", goal="anything")'
    assert "FINAL ANSWER OF THE RESEARCHER: Launched 25 Dec 2021" in text


def test_reformat_trace_limits_shorten_and_drop_responses() -> None:
    traj = build_trajectory()
    text = reformat_trace(traj, response_limits={3: 0, 4: 50}, reasoning_limits={1: 10})
    assert "gold-plated beryllium" not in text  # response 3 dropped
    assert "[SEARCH RESULT 3 for query_url(" in text  # but the call is still shown
    assert "[search result shortened to fit the context]" in text
    assert "[reasoning shortened to fit the context]" in text
    assert "3. query_url(url=" in text.split("TOOL CALLS MADE", 1)[1]


def test_only_pages_read_successfully_are_citable() -> None:
    urls = citable_urls(build_trajectory())
    assert urls == {WIKI, STSCI, ESA}
    # a URL the model made up and could not fetch is not, nor one only shown in search results
    assert "https://made-up.example.net/jwst" not in urls and NASA not in urls
    assert "https://tool-docs.example.com/usage" not in urls  # only in the system prompt
    assert "https://hallucinated.example.org/in-reasoning" not in urls  # only in the model's thinking
    # a 404 of an invented URL, and a URL inside its error text, are not; pages read are, even when
    # the extractor found nothing on them (the citation check is about reading, not content)
    assert citable_urls(trajectory_with_failed_and_empty_reads()) == {WIKI, STSCI, ESA, FAQ, ECHO}
    assert not {MISSING, MIRROR} & citable_urls(trajectory_with_failed_and_empty_reads())


def test_url_normalisation_trims_prose_punctuation_but_keeps_balanced_parentheses() -> None:
    assert normalise_url("https://a.org/x.") == "https://a.org/x"
    assert normalise_url('https://a.org/x",') == "https://a.org/x"
    assert normalise_url("https://en.wikipedia.org/wiki/Webb_(disambiguation)") == PAREN
    assert normalise_url("https://en.wikipedia.org/wiki/Webb_(disambiguation)).") == PAREN
    text = f"See ({WIKI}) and [title]({PAREN}), also https://b.org/p?q=1;"
    assert find_urls(text) == [WIKI, PAREN, "https://b.org/p?q=1"]


def test_build_prompt_is_chatml_opened_inside_think() -> None:
    traj = build_trajectory()
    prompt = build_prompt(QUESTION, reformat_trace(traj), citable_urls(traj))
    head = "<|im_start|>system\n" + SYNTHESIZER_SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n"
    assert prompt.startswith(head)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert "SEARCH TRACE:\nUSER: " in prompt
    may_cite = prompt.split("URLS YOU MAY CITE:", 1)[1].split("\n\n", 1)[0].split()
    assert may_cite == sorted([WIKI, STSCI, ESA])  # the pages read, not the search results
    for part in ("Executive Summary", "Recommendations", "Conclusion", "Sources used",
                 "| Section | Item | Content | Confidence |", "4 to 6", "2,000 words"):
        assert part in SYNTHESIZER_SYSTEM_PROMPT


def test_parse_output_with_and_without_think() -> None:
    assert parse_output("<think>\nplan A\n</think>\n# Report\ntext") == ("plan A", "# Report\ntext")
    # the prompt already opened <think>, so the output usually lacks the opening tag
    assert parse_output("plan B</think>\n\n# R\nbody<|im_end|>") == ("plan B", "# R\nbody")
    assert parse_output("# Report only\nbody") == ("", "# Report only\nbody")
    assert parse_output("<think>a plan that never ended") == ("a plan that never ended", "")
    assert parse_output("p</think>intro <think>again</think> rest") == ("p", "intro  rest")
