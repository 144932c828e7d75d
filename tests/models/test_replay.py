"""The replay model backend: recorded policy turns served at a set latency."""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import pytest
from fathom.agent import protocol
from fathom.agent.loop import AgentLoop
from fathom.core.config import AgentSettings, ModelRole, PolicyRole, Settings
from fathom.core.errors import ConfigError
from fathom.models.base import ChatMessage, ModelBackend, SamplingParams
from fathom.models.factory import build_backend, close_backends, new_backend
from fathom.models.replay import (
    CHARS_PER_TOKEN_ESTIMATE,
    DEFAULT_COMPLETION,
    LOCAL_WEB_MARKER,
    ReplayBackend,
    load_recordings,
    mark_local_web,
    recordings_from_store,
    recordings_path,
    write_recordings,
)
from fathom.store.db import Database
from fathom.store.repository import JobStore

from tests.agent.agent_scripted import InMemoryTools

PARAMS = SamplingParams(max_new_tokens=512, stop=protocol.STOP_STRINGS)
EVEREST = "How high is Mount Everest?"
K2 = "Who first climbed K2?"

RECORDINGS = [
    {"question": EVEREST, "steps": [
        "\nI should search.\n</think>\n"
        + protocol.format_tool_call("search_urls", {"query": "Everest height"}),
        "\nRead the page.\n</think>\n" + protocol.format_tool_call(
            "query_url", {"url": "https://mountains.example/everest", "goal": "height"}),
        "\nIt is 8,849 m.\n</think>\n\\boxed{8,849 metres}",
    ]},
    {"question": K2, "steps": [
        "\nLocal page.\n</think>\n" + protocol.format_tool_call(
            "query_url", {"url": f"{LOCAL_WEB_MARKER}/wiki/K2-abc", "goal": "first ascent"}),
        "\nDone.\n</think>\n\\boxed{Lacedelli and Compagnoni}",
    ]},
]


def backend(latency_s: float = 0.0, origin: str = "http://127.0.0.1:8765") -> ReplayBackend:
    return ReplayBackend(RECORDINGS, latency_s=latency_s, origin=origin, name="replay-test")


def policy_prompt(question: str, turns: int = 0) -> str:
    """The context the loop sends after ``turns`` finished turns (each with one tool response)."""
    context = protocol.build_prompt(question)
    for i in range(turns):
        context += f"turn {i}" + protocol.END_OF_TURN + protocol.IM_START + "user\n<tool_response>\nr\n" \
            "</tool_response>" + protocol.END_OF_TURN + protocol.ASSISTANT_OPEN
    return context


def test_is_a_model_backend() -> None:
    assert isinstance(backend(), ModelBackend)


async def test_latency_is_honoured() -> None:
    replay = backend(latency_s=0.05)
    started = time.perf_counter()
    completion = await replay.complete(policy_prompt(EVEREST), PARAMS)
    elapsed = time.perf_counter() - started
    assert elapsed >= 0.05
    assert completion.latency_s >= 0.05
    assert completion.token_ids is None and completion.logprobs is None


async def test_the_question_and_the_turn_pick_the_step() -> None:
    replay = backend()
    for turn, expected in enumerate(RECORDINGS[0]["steps"]):
        completion = await replay.complete(policy_prompt(EVEREST, turn), PARAMS)
        assert completion.text == expected
        assert completion.finish_reason == "stop"
    # Past the recorded steps: the last one again (it holds the answer, so a loop ends there).
    late = await replay.complete(policy_prompt(EVEREST, 7), PARAMS)
    assert late.text == RECORDINGS[0]["steps"][-1]


async def test_an_unknown_question_takes_a_recording_by_a_stable_hash() -> None:
    replay = backend()
    chosen: dict[str, str] = {}
    for i in range(12):
        question = f"An unrecorded question number {i}?"
        digest = hashlib.sha256(question.encode()).digest()
        expected = RECORDINGS[int.from_bytes(digest[:8], "big") % len(RECORDINGS)]
        assert replay.recording_for(question) is not None
        assert replay.recording_for(question)["question"] == expected["question"]
        first = (await replay.complete(policy_prompt(question), PARAMS)).text
        again = (await backend().complete(policy_prompt(question), PARAMS)).text  # another instance
        assert first == again
        chosen[question] = replay.recording_for(question)["question"]
    assert set(chosen.values()) == {EVEREST, K2}  # the hash spreads questions over recordings


async def test_the_local_web_marker_is_served_with_the_configured_origin() -> None:
    replay = backend(origin="http://127.0.0.1:9999/")
    text = (await replay.complete(policy_prompt(K2), PARAMS)).text
    assert "http://127.0.0.1:9999/wiki/K2-abc" in text
    assert LOCAL_WEB_MARKER not in text


def test_marking_replaces_loopback_and_given_origins() -> None:
    text = "see http://127.0.0.1:33623/wiki/A and http://localhost:8765/b and http://web.internal:80/c"
    marked = mark_local_web(text, origins=["http://web.internal:80/"])
    assert marked == f"see {LOCAL_WEB_MARKER}/wiki/A and {LOCAL_WEB_MARKER}/b and {LOCAL_WEB_MARKER}/c"
    assert mark_local_web("https://en.wikipedia.org/wiki/K2") == "https://en.wikipedia.org/wiki/K2"


async def test_prompts_that_are_not_the_policys_get_the_default_completion() -> None:
    replay = backend()
    extractor_like = await replay.chat([ChatMessage("user", "Page text... Goal: height")], PARAMS)
    assert extractor_like.text == DEFAULT_COMPLETION
    from fathom.tools.extract.answer import parse_answer

    parsed = parse_answer(DEFAULT_COMPLETION)
    assert parsed.rationale and parsed.summary
    custom = ReplayBackend(RECORDINGS, default_completion="Rationale: x\nEvidence:\nSummary: y")
    assert (await custom.chat([ChatMessage("user", "hi")], PARAMS)).text.startswith("Rationale: x")


async def test_stop_strings_length_and_choices_are_honoured() -> None:
    recs = [{"question": EVEREST, "steps": ["\nabc</think>\n\\boxed{1}<tool_response>\nfake"]}]
    replay = ReplayBackend(recs)
    stopped = await replay.complete(policy_prompt(EVEREST), PARAMS)
    assert stopped.text == "\nabc</think>\n\\boxed{1}" and stopped.stop == protocol.RESPONSE_OPEN
    cut = await replay.complete(policy_prompt(EVEREST), SamplingParams(max_new_tokens=2))
    assert cut.finish_reason == "length"
    assert replay.count_tokens(cut.text) <= 2
    chosen = await replay.complete(policy_prompt(EVEREST), SamplingParams(choices=("yes", "\nabc")))
    assert chosen.text == "\nabc"


def test_token_counts_use_the_documented_estimate_without_a_tokenizer() -> None:
    replay = backend()
    text = "x" * 100
    assert replay.count_tokens(text) == math.ceil(100 / CHARS_PER_TOKEN_ESTIMATE) == 34
    assert replay.count_tokens("") == 0


def test_token_counts_use_the_bundled_tokenizer_when_it_is_prepared(tmp_path: Path) -> None:
    from fathom.models.bundled import bundled_model_dir, is_prepared

    settings = Settings()
    if not is_prepared(settings.models_dir):
        pytest.skip("the bundled model is not prepared (fathom models prepare)")
    from transformers import AutoTokenizer

    role = ModelRole(backend="replay", model="bundled:replay-demo")
    replay = ReplayBackend.from_role(role, settings)
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_dir(settings.models_dir)))
    text = "The Eiffel Tower is in Paris, France; Gustave Eiffel's company built it."
    assert replay.count_tokens(text) == len(tokenizer(text, add_special_tokens=False).input_ids)


def test_recordings_files(tmp_path: Path) -> None:
    shipped = load_recordings(recordings_path("bundled:replay-demo"))
    assert shipped[0]["question"].startswith("Which country is the Eiffel Tower in")
    steps = shipped[0]["steps"]
    assert "search_urls" in steps[0] and LOCAL_WEB_MARKER in steps[1] and "\\boxed{" in steps[-1]
    with pytest.raises(ConfigError, match="no bundled replay recording"):
        recordings_path("bundled:nope")
    path = tmp_path / "r.jsonl"
    assert write_recordings(path, RECORDINGS) == 2
    assert load_recordings(path) == RECORDINGS
    path.write_text(path.read_text() + '{"question": "q", "steps": []}\n')
    with pytest.raises(ConfigError, match=r"r\.jsonl:3"):
        load_recordings(path)
    with pytest.raises(ConfigError, match="not found"):
        load_recordings(tmp_path / "missing.jsonl")


async def test_the_factory_builds_it_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recordings(path, RECORDINGS)
    settings = Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache",
                        policy=PolicyRole(backend="replay", model=str(path), latency_s=0.01))
    settings.web.port = 8123
    try:
        shared = build_backend("policy", settings)
        assert isinstance(shared, ReplayBackend) and shared.latency_s == 0.01
        assert shared.origin == "http://127.0.0.1:8123"
        assert build_backend("policy", settings) is shared
        owned = new_backend("policy", settings)
        assert owned is not shared
        await owned.aclose()
    finally:
        await close_backends()


async def test_an_agent_loop_replays_a_whole_trajectory() -> None:
    replay = backend(latency_s=0.01)
    agent = AgentLoop(replay, InMemoryTools(), AgentSettings(), SamplingParams(max_new_tokens=512))
    traj = await agent.run(EVEREST)
    assert [s.text for s in traj.steps] == RECORDINGS[0]["steps"]
    assert traj.stop_reason == "answered" and traj.answer == "8,849 metres"
    assert traj.steps[1].tool_calls[0].ok  # the recorded URL was read by the real (in-memory) tool


def test_recordings_from_store(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'fathom.db'}")
    db.migrate()
    try:
        store = JobStore(db)
        job_id = store.create_job(K2, "search")
        traj_id = store.start_trajectory(job_id, K2, protocol.build_prompt(K2))
        from fathom.agent.trajectory import Step

        texts = ["\nread\n</think>\n" + protocol.format_tool_call(
            "query_url", {"url": "http://127.0.0.1:41234/wiki/K2-abc", "goal": "first ascent"}),
            "\nDone.\n</think>\n\\boxed{Lacedelli and Compagnoni}"]
        for i, text in enumerate(texts):
            store.record_step(traj_id, Step(index=i, text=text, think=None, tool_calls=[], answer=None))
        empty = store.create_job("nothing yet", "search")
        recs = recordings_from_store(store, [job_id, empty])
    finally:
        db.dispose()
    assert recs == [{"question": K2, "steps": [mark_local_web(t) for t in texts]}]
    assert f"{LOCAL_WEB_MARKER}/wiki/K2-abc" in recs[0]["steps"][0]
    out = tmp_path / "exported.jsonl"
    write_recordings(out, recs)
    replay = ReplayBackend(load_recordings(out), origin="http://127.0.0.1:8765")
    assert "http://127.0.0.1:8765/wiki/K2-abc" in replay.text_for(policy_prompt(K2))
