"""The model seam. Agent, synthesizer, extractor and judge depend on this and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 1024
    temperature: float = 0.6
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False  # ask for per-token log-probabilities of the sampled tokens
    # Constrained decoding over a finite set: the completion is exactly one of these strings
    # (transformers: highest log-likelihood; vLLM: guided_choice). Used to keep weak models on protocol.
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class Completion:
    """One completion. ``text`` excludes the stop string that ended it; ``stop`` names it."""

    text: str
    finish_reason: FinishReason
    usage: Usage = field(default_factory=Usage)
    token_ids: list[int] | None = None  # generated ids, when the backend exposes them
    logprobs: list[float] | None = None  # one per generated token, when requested and available
    stop: str | None = None  # the stop string that matched, if any
    model: str = ""
    latency_s: float = 0.0


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@runtime_checkable
class ModelBackend(Protocol):
    """Complete raw prompt text. Fathom models speak ChatML text, so raw completion is the base case.

    ``complete_batch`` exists because in-process backends batch far better than they interleave.
    """

    name: str

    async def complete(self, prompt: str, params: SamplingParams) -> Completion: ...

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]: ...

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The model's chat template applied to messages, as raw prompt text."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TokenBackend(Protocol):
    """The token-level path that training rollouts use: token ids in, sampled ids and their
    log-probabilities out, so that nothing the policy saw or wrote is ever re-tokenized.

    ``complete_tokens`` returns a ``Completion`` whose ``token_ids`` are every id sampled (the ids
    of a matched stop string included, unlike ``text``) and whose ``logprobs`` are always filled,
    one per id, whatever ``params.logprobs`` says. With ``params.choices`` the ids are those of the
    chosen string tokenized on its own, scored after ``prompt_ids``. ``tokenize`` must agree with
    the tokenizer the model runs (no special tokens added), ``detokenize`` with its decoding.
    """

    name: str

    async def complete_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Completion: ...

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, token_ids: list[int]) -> str: ...


def supports_tokens(backend: object) -> bool:
    """Whether ``backend`` serves the token-level path (``TokenBackend``)."""
    names = ("complete_tokens", "tokenize", "detokenize")
    return all(callable(getattr(backend, name, None)) for name in names)
