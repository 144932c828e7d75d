"""Token-exact group rollouts through the policy service with the bundled model.

The proof of exactness: the training sequence (prompt ids + recorded segments) is scored by the same
weights, and on every id with mask 1 the log-prob recorded at sampling time equals the scored one
(temperature 1, top-p 1: the sampling distribution is the model's). Had anything been re-tokenized,
the ids would differ from what the model saw and the log-probs would not line up.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fathom.agent.policy_service import PolicyService, SamplingOverrides
from fathom.agent.trajectory import Step, Trajectory
from fathom.core.config import AgentSettings, Settings
from fathom.models.bundled import prepare_bundled
from fathom.models.transformers_backend import TransformersBackend
from fathom.training.rollouts import NotTokenExact, group_rollouts, token_rollout

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
from agent_scripted import InMemoryTools  # the in-memory web of the agent tests

# Temperature 1, top-p 1, no repetition penalty: the sampling distribution is the model's own.
EXACT = SamplingOverrides(temperature=1.0, top_p=1.0, repetition_penalty=1.0)
QUESTION = "Which river flows through the capital of France?"


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    b = TransformersBackend(str(prepare_bundled(Settings().models_dir)), name="smollm2-rollouts")
    b.load()
    return b


def _service(backend: TransformersBackend, guided: bool) -> PolicyService:
    agent = AgentSettings(guided=guided, guided_max_turns=2, max_turns=2, max_new_tokens_per_turn=32)
    return PolicyService(backend, lambda lane, tid, job_id: InMemoryTools(), Settings(agent=agent))


def _check_exact(backend: TransformersBackend, traj: Trajectory) -> None:
    r = token_rollout(traj, prompt_id="p1")
    assert r.prompt_ids == backend.tokenize(traj.prompt)
    assert len(r.completion_ids) == len(r.logprobs) == len(r.mask) and r.sampled_tokens > 0
    seq = r.prompt_ids + r.completion_ids
    scored = asyncio.run(backend.score_tokens(seq, len(r.prompt_ids)))
    sampled = [i for i, m in enumerate(r.mask) if m]
    assert [r.logprobs[i] for i in sampled] == pytest.approx([scored[i] for i in sampled], abs=5e-4)
    assert all(r.logprobs[i] == 0.0 for i, m in enumerate(r.mask) if not m)
    text = backend.detokenize(seq)
    for step in traj.steps:  # each turn's text is the text of its ids, in place
        assert step.text in text
        kinds = [s["kind"] for s in step.meta["segments"]]
        assert kinds[-1] in ("end_of_turn", "tool_response")
        for seg in step.meta["segments"]:
            if seg["kind"] == "tool_response":
                assert seg["ids"] and "<tool_response>" in backend.detokenize(seg["ids"])
        assert len(step.token_ids or []) == len(step.meta["token_mask"])


@pytest.mark.slow
def test_guided_group_rollouts_are_token_exact(backend: TransformersBackend) -> None:
    svc = _service(backend, guided=True)
    trajs = asyncio.run(group_rollouts(svc, QUESTION, 2, replace(EXACT, seed=7)))
    assert len(trajs) == 2 and {t.meta["lane"] for t in trajs} == {"train"}
    assert [t.meta["seed"] for t in trajs] == [7, 8]
    for traj in trajs:
        assert traj.stop_reason != "error", traj.meta
        _check_exact(backend, traj)
        r = token_rollout(traj)
        # Guided prefills (the <tool_call> JSON the policy writes) and tool responses are mask 0.
        assert 0 in r.mask and r.tool_calls >= 1
        kinds = {s["kind"] for st in traj.steps for s in st.meta["segments"]}
        assert {"sampled", "prefill", "tool_response"} <= kinds


@pytest.mark.slow
def test_free_rollout_is_token_exact(backend: TransformersBackend) -> None:
    svc = _service(backend, guided=False)
    trajs = asyncio.run(group_rollouts(svc, QUESTION, 1, replace(EXACT, seed=1)))
    _check_exact(backend, trajs[0])


def test_text_path_trajectory_is_refused() -> None:
    traj = Trajectory(
        question="q",
        prompt="p",
        steps=[
            Step(
                index=0,
                text="t",
                think=None,
                tool_calls=[],
                answer=None,
                token_ids=[1, 2],
                logprobs=[0.0, 0.0],
            )
        ],
    )
    with pytest.raises(NotTokenExact):
        token_rollout(traj)
    traj.meta["prompt_ids"] = [5]
    with pytest.raises(NotTokenExact, match="step 0"):
        token_rollout(traj)
