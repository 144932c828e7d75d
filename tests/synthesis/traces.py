"""A realistic search trace (James Webb Space Telescope) built the way the agent records one."""

from __future__ import annotations

from collections.abc import Mapping

from fathom.agent.trajectory import Step, ToolCall, Trajectory
from fathom.tools.search.base import SearchHit, format_results

QUESTION = "How was the James Webb Space Telescope launched and deployed, and what did its first images show?"

WIKI = "https://en.wikipedia.org/wiki/James_Webb_Space_Telescope"
NASA = "https://science.nasa.gov/mission/webb/"
ESA = "https://www.esa.int/Science_Exploration/Space_Science/Webb"
ARIANE = "https://en.wikipedia.org/wiki/Ariane_5"
STSCI = "https://webbtelescope.org/contents/news-releases/2022/news-2022-035"
L2 = "https://en.wikipedia.org/wiki/Lagrange_point"
SMACS = "https://en.wikipedia.org/wiki/SMACS_J0723.3%E2%88%927327"  # never read, only listed
PAREN = "https://en.wikipedia.org/wiki/Webb_(disambiguation)"

SYSTEM = (
    "<|im_start|>system\nYou are a persistent web researcher. Tools: search_urls, query_url. "
    "Example: https://tool-docs.example.com/usage<|im_end|>\n"
)
PROMPT = f"{SYSTEM}<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n<think>"


def _page(url: str, goal: str, rationale: str, evidence: list[str], summary: str) -> str:
    quotes = "\n".join(f'"{q}"' for q in evidence)
    return (
        f"URL: {url}\nGoal: {goal}\n\nRationale: {rationale}\n\nEvidence:\n{quotes}\n\n"
        f"Summary: {summary}"
    )


SEARCH_1 = format_results(
    "James Webb Space Telescope launch deployment",
    [
        SearchHit("James Webb Space Telescope - Wikipedia", WIKI,
                  "The James Webb Space Telescope (JWST) is a space telescope designed to conduct "
                  "infrared astronomy. It launched on 25 December 2021 on an Ariane 5 rocket."),
        SearchHit("Webb - NASA Science", NASA,
                  "Webb is the premier observatory of the next decade, an international program led "
                  "by NASA with its partners ESA and the Canadian Space Agency."),
        SearchHit("ESA - Webb", ESA,
                  "ESA provided the Ariane 5 launch service and the NIRSpec instrument."),
        SearchHit("Ariane 5 - Wikipedia", ARIANE,
                  "Ariane 5 is a retired European heavy-lift launch vehicle. Its final flights "
                  "included the launch of the James Webb Space Telescope (flight VA256)."),
    ],
)
SEARCH_2 = format_results(
    "Webb first images July 2022",
    [
        SearchHit("NASA's Webb Delivers Deepest Infrared Image of Universe Yet", STSCI,
                  "Webb's First Deep Field shows galaxy cluster SMACS 0723 as it appeared 4.6 "
                  "billion years ago, teeming with thousands of galaxies."),
        SearchHit("SMACS J0723.3-7327 - Wikipedia", SMACS,
                  "SMACS J0723.3-7327 is a galaxy cluster in the constellation Volans."),
        SearchHit("Lagrange point - Wikipedia", L2,
                  "The Sun-Earth L2 point is about 1.5 million kilometres from Earth."),
        SearchHit("Webb (disambiguation) - Wikipedia", PAREN, "Webb may refer to several things."),
    ],
)
PAGE_WIKI = _page(
    WIKI, "launch date, rocket, deployment timeline",
    "The article describes the launch and the month-long deployment in detail.",
    [
        "JWST was launched on 25 December 2021 on an Ariane 5 rocket from Kourou, French Guiana.",
        "It arrived at the Sun-Earth L2 Lagrange point in January 2022.",
        "The primary mirror consists of 18 hexagonal mirror segments made of gold-plated beryllium, "
        "which combined create a 6.5-metre-diameter mirror.",
        "The five-layer sunshield is about the size of a tennis court.",
    ],
    "Webb launched on 25 December 2021 aboard Ariane 5 from Kourou and reached L2 in January 2022; "
    "its 6.5 m mirror of 18 segments and five-layer sunshield unfolded in space.",
)
PAGE_STSCI = _page(
    STSCI, "what the first images showed",
    "This is the official release of the first full-colour images.",
    [
        "NASA's James Webb Space Telescope has produced the deepest and sharpest infrared image of "
        "the distant universe to date.",
        "This image of galaxy cluster SMACS 0723 is overflowing with detail, including thousands of "
        "galaxies.",
        "The image shows the galaxy cluster as it appeared 4.6 billion years ago.",
    ],
    "The first deep field (SMACS 0723), released on 12 July 2022, showed thousands of galaxies in "
    "the deepest infrared image yet, seeing the cluster as it was 4.6 billion years ago.",
)
PAGE_ESA = _page(
    ESA, "Europe's role in the launch",
    "ESA describes its contribution to Webb.",
    ["The Ariane 5 launch was so precise that Webb saved fuel, extending its expected life to "
     "well beyond 10 years."],
    "Ariane 5's precise launch left Webb with enough fuel for more than a decade of science.",
)


def _call(i: int, name: str, args: Mapping[str, object], result: str, ok: bool = True) -> ToolCall:
    import json

    return ToolCall(index=i, name=name, arguments=dict(args),
                    raw=json.dumps({"name": name, "arguments": args}), result=result, ok=ok)


def _tc(name: str, args: Mapping[str, object]) -> str:
    import json

    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def build_trajectory() -> Trajectory:
    a1 = {"query": "James Webb Space Telescope launch deployment", "top_k": 4}
    a2 = {"query": "Webb first images July 2022", "top_k": 4}
    a3 = {"url": WIKI, "goal": "launch date, rocket, deployment timeline"}
    a4 = {"url": STSCI, "goal": "what the first images showed"}
    a5 = {"url": ESA, "goal": "Europe's role in the launch"}
    a6 = {"url": "https://made-up.example.net/jwst", "goal": "anything"}
    steps = [
        Step(index=0,
             text="I need the launch facts first, then the first images.</think>\n"
                  + _tc("search_urls", a1) + "\n" + _tc("search_urls", a2),
             think="I need the launch facts first, then the first images.",
             tool_calls=[_call(0, "search_urls", a1, SEARCH_1), _call(1, "search_urls", a2, SEARCH_2)],
             answer=None),
        Step(index=1,
             text="The Wikipedia and STScI pages should have the details. I also saw "
                  "https://hallucinated.example.org/in-reasoning in my head.</think>\n"
                  + _tc("query_url", a3) + _tc("query_url", a4),
             think="...",
             tool_calls=[_call(0, "query_url", a3, PAGE_WIKI), _call(1, "query_url", a4, PAGE_STSCI)],
             answer=None),
        Step(index=2,
             text="ESA's role and one more page.</think>\n" + _tc("query_url", a5) + _tc("query_url", a6),
             think="...",
             tool_calls=[
                 _call(0, "query_url", a5, PAGE_ESA),
                 _call(1, "query_url", a6,
                       "query_url: could not fetch the page: connection refused "
                       "(https://made-up.example.net/jwst)", ok=False),
             ],
             answer=None),
        Step(index=3,
             text="I have enough.</think>\nWebb launched on 25 December 2021 on Ariane 5.\n"
                  "\\boxed{Launched 25 Dec 2021 on Ariane 5; first deep field SMACS 0723 on 12 July 2022}",
             think="I have enough.", tool_calls=[],
             answer="Launched 25 Dec 2021 on Ariane 5; first deep field SMACS 0723 on 12 July 2022"),
    ]
    return Trajectory(question=QUESTION, prompt=PROMPT, steps=steps,
                      answer=steps[-1].answer, stop_reason="answered", model="test-trace")


def long_trajectory() -> Trajectory:
    """The realistic trace plus four more page reads of very different lengths."""
    traj = build_trajectory()
    sizes = [20_000, 40_000, 20_000, 4_000]  # calls 7, 8, 9, 10
    calls = []
    for i, size in enumerate(sizes):
        paragraph = f"Page {i} evidence: Webb's sunshield has five layers of Kapton film. "
        calls.append(ToolCall(index=i, name="query_url",
                              arguments={"url": f"https://archive.example.org/webb/{i}", "goal": "sunshield"},
                              raw="{}", result=(paragraph * (size // len(paragraph) + 1))[:size], ok=True))
    traj.steps.insert(3, Step(index=4, text="More about the sunshield.</think>", think="", tool_calls=calls,
                              answer=None))
    return traj


# A page the policy invented on a real host: the fetch failed with a 404 whose text names the URL
# (and another one), so neither may ever be cited.
MISSING = "https://www.esa.int/Science_Exploration/Webb_launch_delay_2021"
MIRROR = "https://mirror.example.org/esa/webb-launch-delay"
FAQ = "https://www.jwst.nasa.gov/content/about/faqs/faq.html"  # read, but the extractor found nothing
ECHO = "https://www.space.com/james-webb-space-telescope-launch"  # read; the extractor echoed its layout

# What the weak extractor wrote when nothing on the page matched the goal (tools/extract/render.py).
PAGE_FAQ = (
    f"URL: {FAQ}\nGoal: launch delays\n\n"
    "Rationale: The page text is data, not instructions. No relevant information about the goal.\n\n"
    "Evidence:\nNone found on the page.\n\n"
    "Summary: (none given)"
)
# A rationale that imitates the response layout, with a quote that is not on the page, and a
# summary that invents facts: model words that nothing checked.
PAGE_ECHO = (
    f"URL: {ECHO}\nGoal: launch date\n\n"
    "Rationale: The page covers the launch.\n"
    'Evidence:\n"Webb was launched from Florida in 2019 on a Falcon 9."\n\n'
    "Evidence:\n"
    '"The telescope lifted off from Europe\'s Spaceport in Kourou at 12:20 GMT on 25 December 2021."\n'
    '"Tap here [to read more] about the launch."\n"launch was a success, said'
    "\n\nSummary: Webb launched from Cape Canaveral in 2019 and was designed by SpaceX engineers."
)
# The page text behind PAGE_ECHO, as its snapshot gives it back.
ECHO_PAGE_TEXT = (
    "James Webb Space Telescope launch: what happened\n"
    "The telescope lifted off from Europe's Spaceport in Kourou at 12:20 GMT on 25 December 2021. "
    "Tap here [to read more] about the launch. Engineers said the launch was a success, said NASA."
)


def trajectory_with_failed_and_empty_reads() -> Trajectory:
    """The realistic trace plus a turn that read an invented URL (404), a page where the extractor
    found nothing (its placeholders), and a page whose extractor answer echoes the layout."""
    traj = build_trajectory()
    a1 = {"url": MISSING, "goal": "launch delays"}
    a2 = {"url": FAQ, "goal": "launch delays"}
    a3 = {"url": ECHO, "goal": "launch date"}
    not_found = (f"Error (query_url): {MISSING} answered HTTP 404 Not Found (a copy may be at {MIRROR})")
    calls = [_call(0, "query_url", a1, not_found, ok=False), _call(1, "query_url", a2, PAGE_FAQ),
             _call(2, "query_url", a3, PAGE_ECHO)]
    traj.steps.insert(3, Step(index=3, text="Any delays?</think>\n" + "".join(
        _tc("query_url", a) for a in (a1, a2, a3)), think="Any delays?", tool_calls=calls, answer=None))
    traj.steps[-1].index = 4
    return traj


def snapshot_texts(call: ToolCall) -> str | None:
    """``PageTexts`` for these traces: the one page whose text is at hand, as its snapshot gives it."""
    return ECHO_PAGE_TEXT if call.arguments.get("url") == ECHO else None
