"""A model backend that serves recorded policy turns at a set latency: no weights, no GPU.

The plane (queues, workers, gRPC services, store) is load-, fault- and benchmark-tested with this
backend in the policy role: each completion costs ``role.latency_s`` of wall time (an
``asyncio.sleep``, so hundreds of concurrent calls cost no CPU) and returns the text a real run
wrote at that point of that trajectory.

Recordings are a JSONL file (``role.model`` is its path; ``bundled:replay-demo`` is the file shipped
in ``fathom/data/replay/``), one trajectory a line: ``{"question": ..., "steps": [text, ...]}`` —
the generated text of each assistant turn, as ``Step.text`` stores it. ``recordings_from_store``
makes them from stored jobs. URLs of the local web are stored with their origin replaced by
``{local_web}`` and served with ``settings.web.origin``, so a recording works whatever port the
local web of the run that made it had.

Which completion a prompt gets: the question is the first ChatML user turn of the prompt, the step
index is the number of assistant turns already closed in it. A question without a recording takes
the recording chosen by a stable hash (sha256) of the question; past the recorded steps the last
step's text is served again (it normally holds the ``\\boxed{}`` answer, so the loop ends there).

Prompts that are not the policy's (the extractor's, the synthesizer's, a judge's: anything not
opened by the Fathom policy's system prompt and an assistant turn in ``<think>``) get one fixed
completion, ``DEFAULT_COMPLETION``, written in the extractor's three-part format (Rationale /
Evidence / Summary) so that every reader of it parses it; pass ``default_completion`` to change it.

Token counts: with the bundled model prepared (``fathom models prepare``), its real tokenizer counts;
otherwise a conservative estimate of one token per 3 characters (English BPE averages about 4), so
the agent's context budget is reached early rather than late. Token ids and log-probs: none.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fathom.core.config import ModelRole, Settings
from fathom.core.errors import ConfigError
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, Completion, SamplingParams, Usage
from fathom.models.chatml import render_chatml

if TYPE_CHECKING:
    from fathom.store.repository import JobStore

log = get_logger(__name__)

LOCAL_WEB_MARKER = "{local_web}"
BUNDLED_PREFIX = "bundled:"
REPLAY_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "replay"
CHARS_PER_TOKEN_ESTIMATE = 3  # conservative: English BPE averages ~4 characters a token

DEFAULT_COMPLETION = (
    "Rationale: The replay backend serves recorded policy turns only; this is its fixed answer "
    "for every other prompt.\n"
    "Evidence:\n"
    "Summary: No model read this text (replay backend)."
)

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_ASSISTANT = f"{_IM_START}assistant\n"
_USER_TURN = re.compile(re.escape(f"{_IM_START}user\n") + r"(.*?)" + re.escape(_IM_END), re.DOTALL)
# The local web is the only loopback origin the fetch chain reads (everything else private is
# refused), so a loopback origin in a recorded step is the local web's.
_LOOPBACK_ORIGIN = re.compile(r"https?://(?:127\.0\.0\.1|localhost|\[::1\]):\d+")


def recordings_path(model: str) -> Path:
    """The file a replay role's ``model`` names: ``bundled:NAME`` is shipped, anything else a path."""
    if model.startswith(BUNDLED_PREFIX):
        name = model[len(BUNDLED_PREFIX):]
        path = REPLAY_DATA_DIR / f"{name}.jsonl"
        if not path.is_file():
            shipped = sorted(p.stem for p in REPLAY_DATA_DIR.glob("*.jsonl"))
            raise ConfigError(f"no bundled replay recording {name!r}; "
                              f"shipped: {', '.join(shipped) or 'none'}")
        return path
    return Path(model).expanduser()


def load_recordings(path: Path) -> list[dict[str, Any]]:
    """Read and check a recordings file; a bad line is a clear error naming the line."""
    if not path.is_file():
        raise ConfigError(f"replay recordings not found: {path}")
    recordings: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not JSON ({e.msg})") from e
        steps = data.get("steps") if isinstance(data, dict) else None
        question = data.get("question") if isinstance(data, dict) else None
        if not isinstance(question, str) or not isinstance(steps, list) or not steps \
                or not all(isinstance(s, str) for s in steps):
            raise ConfigError(f"{path}:{n}: expected "
                              '{"question": str, "steps": [str, ...]} with at least one step')
        recordings.append({"question": question, "steps": steps})
    if not recordings:
        raise ConfigError(f"replay recordings file {path} holds no trajectory")
    return recordings


def write_recordings(path: Path, trajectories: Iterable[dict[str, Any]]) -> int:
    """Write recordings as JSONL (one trajectory a line); returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for traj in trajectories:
            f.write(json.dumps({"question": traj["question"], "steps": list(traj["steps"])},
                               ensure_ascii=False) + "\n")
            n += 1
    return n


def mark_local_web(text: str, origins: Sequence[str] = ()) -> str:
    """Replace the local web's origin (the given ones, and any loopback origin) by the marker."""
    for origin in origins:
        text = text.replace(origin.rstrip("/"), LOCAL_WEB_MARKER)
    return _LOOPBACK_ORIGIN.sub(LOCAL_WEB_MARKER, text)


def recordings_from_store(store: JobStore, job_ids: Iterable[str],
                          origins: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Recordings of stored jobs' trajectories (jobs without steps are skipped, with a log line)."""
    out: list[dict[str, Any]] = []
    for job_id in job_ids:
        traj = store.load_trajectory(job_id)
        if traj is None or not traj.steps:
            log.warning("replay.no_steps", job_id=job_id)
            continue
        out.append({"question": traj.question,
                    "steps": [mark_local_web(s.text, origins) for s in traj.steps]})
    return out


def question_of(prompt: str) -> str | None:
    """The question of a policy prompt: its first user turn."""
    m = _USER_TURN.search(prompt)
    return m.group(1).strip() if m else None


def step_index_of(prompt: str) -> int:
    """Assistant turns already written in the prompt: the open one at its end is not counted."""
    return max(0, prompt.count(_ASSISTANT) - 1)


class ReplayBackend:
    """``ModelBackend`` serving recorded policy turns (see the module docstring)."""

    def __init__(self, recordings: list[dict[str, Any]], *, latency_s: float = 0.0, origin: str = "",
                 name: str = "replay", default_completion: str = DEFAULT_COMPLETION,
                 tokenizer: Any = None) -> None:
        if not recordings:
            raise ConfigError("the replay backend needs at least one recording")
        self.name = name
        self.latency_s = latency_s
        self.origin = origin.rstrip("/")
        self.default_completion = default_completion
        self.recordings = recordings
        self._by_question = {r["question"].strip(): r for r in recordings}
        self._tokenizer = tokenizer
        self.requests_served = 0
        self._closed = False
        self._count = lru_cache(maxsize=4096)(self._count_uncached)

    @classmethod
    def from_role(cls, role: ModelRole, settings: Settings) -> ReplayBackend:
        path = recordings_path(role.model)
        return cls(load_recordings(path), latency_s=role.latency_s, origin=settings.web.origin,
                   name=role.model, tokenizer=_bundled_tokenizer(settings))

    # ----------------------------------------------------------------- choosing a completion

    def recording_for(self, question: str) -> dict[str, Any]:
        """The recording of this question, else one chosen by a stable hash of it."""
        rec = self._by_question.get(question.strip())
        if rec is not None:
            return rec
        digest = hashlib.sha256(question.strip().encode("utf-8")).digest()
        return self.recordings[int.from_bytes(digest[:8], "big") % len(self.recordings)]

    def text_for(self, prompt: str) -> str:
        """The completion text a prompt gets, before stop strings and length limits."""
        if not _is_policy_prompt(prompt):
            return self.default_completion
        question = question_of(prompt) or ""
        steps: list[str] = self.recording_for(question)["steps"]
        text = steps[min(step_index_of(prompt), len(steps) - 1)]
        return text.replace(LOCAL_WEB_MARKER, self.origin)

    # ----------------------------------------------------------------- ModelBackend

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        if self._closed:
            from fathom.core.errors import ModelError

            raise ModelError(f"backend {self.name!r} is closed")
        started = time.perf_counter()
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        text = self.text_for(prompt)
        if params.choices is not None:
            text = next((c for c in params.choices if text.startswith(c)), params.choices[0])
            completion = self._completion(text, "stop", None, prompt)
        else:
            completion = self._cut(text, params, prompt)
        self.requests_served += 1
        return Completion(text=completion.text, finish_reason=completion.finish_reason,
                          usage=completion.usage, stop=completion.stop, model=self.name,
                          latency_s=time.perf_counter() - started)

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        return list(await asyncio.gather(*(self.complete(p, params) for p in prompts)))

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion:
        return await self.complete(self.render_chat(messages), params)

    def count_tokens(self, text: str) -> int:
        result: int = self._count(text)
        return result

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        return render_chatml(messages, add_generation_prompt)

    async def aclose(self) -> None:
        self._closed = True

    # ----------------------------------------------------------------- helpers

    def _count_uncached(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer(text, add_special_tokens=False).input_ids)
        return math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)

    def _cut(self, text: str, params: SamplingParams, prompt: str) -> Completion:
        """Honour stop strings and ``max_new_tokens`` as a real backend does."""
        cut, matched = len(text), None
        for s in params.stop:
            j = text.find(s)
            if 0 <= j < cut:
                cut, matched = j, s
        text = text[:cut]
        if self.count_tokens(text) > params.max_new_tokens:
            return self._completion(self._truncate(text, params.max_new_tokens), "length", None, prompt)
        return self._completion(text, "stop", matched, prompt)

    def _truncate(self, text: str, max_tokens: int) -> str:
        if self._tokenizer is not None:
            ids = self._tokenizer(text, add_special_tokens=False).input_ids[:max_tokens]
            return str(self._tokenizer.decode(ids))
        return text[:max_tokens * CHARS_PER_TOKEN_ESTIMATE]

    def _completion(self, text: str, finish: Any, stop: str | None, prompt: str) -> Completion:
        return Completion(text=text, finish_reason=finish, stop=stop, model=self.name,
                          usage=Usage(self.count_tokens(prompt), self.count_tokens(text)))


@lru_cache(maxsize=1)
def _policy_markers() -> tuple[str, str]:
    from fathom.agent import protocol

    identity = protocol.system_prompt().split("\n", 1)[0]
    return f"{_IM_START}system\n{identity}", protocol.ASSISTANT_OPEN


def _is_policy_prompt(prompt: str) -> bool:
    """The Fathom policy's prompt: its system prompt first, an assistant turn open in <think> last."""
    head, tail = _policy_markers()
    return prompt.startswith(head) and prompt.endswith(tail)


def _bundled_tokenizer(settings: Settings) -> Any:
    """The bundled model's tokenizer when it is prepared (no weights are loaded), else None."""
    from fathom.models.bundled import bundled_model_dir, is_prepared

    if not is_prepared(settings.models_dir):
        log.info("replay.token_estimate", chars_per_token=CHARS_PER_TOKEN_ESTIMATE,
                 why="the bundled model is not prepared")
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(bundled_model_dir(settings.models_dir)))
    except Exception as e:  # a broken cache: fall back to the documented estimate
        log.warning("replay.tokenizer_unavailable", error=f"{type(e).__name__}: {e}")
        return None
