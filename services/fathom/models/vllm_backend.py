"""The token-level path (``TokenBackend``) over a vLLM server's HTTP API.

``VLLMBackend`` is the ``OpenAIBackend`` (text completions, chat, token counts, retries, errors) plus
what training rollouts need from vLLM: token ids in, the sampled ids and their log-probs out, and
prompt scoring for the trainer's weight-sync checks. Answers are read strictly: ids and log-probs
that do not line up one to one are a ``ModelError``, never trained on.

What is sent and read, from vLLM's source (github.com/vllm-project/vllm):
- ``vllm/entrypoints/openai/completion/protocol.py``, ``CompletionRequest``: ``prompt`` may be a
  list of token ids (used as given: not re-tokenized, no BOS added); ``logprobs``;
  ``return_tokens_as_token_ids`` (tokens come back as ``"token_id:123"``); ``return_token_ids``
  (``token_ids`` / ``prompt_token_ids`` on the choice; a server older than the field ignores it
  with a warning, and the checks that use it are then skipped); ``prompt_logprobs``;
  ``skip_special_tokens``; ``include_stop_str_in_output``; ``seed``; ``top_p``.
- Same file, ``CompletionResponseChoice`` / ``CompletionLogProbs``, and
  ``vllm/entrypoints/openai/completion/serving.py``, ``_create_completion_logprobs``: one
  ``logprobs.tokens`` / ``token_logprobs`` entry per generated token, log-probs floored at
  -9999.0; ``prompt_logprobs`` is ``[null, {"<id>": {"logprob", "rank", "decoded_token"}}, ...]``,
  one entry per prompt token, null for the first (``vllm/v1/engine/logprobs.py``).
- ``vllm/v1/core/sched/utils.py`` (``check_stop``) and ``vllm/v1/engine/detokenizer.py``: EOS and
  ``stop_token_ids`` end the output with that token among the ids (``stop_reason`` null / the id);
  a stop string truncates the text only, and the ids that formed it stay. That is the
  ``TokenBackend`` contract as it is.
- ``/tokenize`` and ``/detokenize`` at the server root: ``OpenAIBackend.tokenize`` / ``detokenize``.

Which log-probs: the sampled ones as the server's ``--logprobs-mode`` says. vLLM's default is the raw
model's; TRL's ``vllm-serve`` sets ``processed_logprobs`` (after temperature and the other logit
processing: the sampling distribution, which is what the in-process backend records and what the
importance ratio needs). ``prompt_logprobs`` are the raw model's, like
``TransformersBackend.score_tokens``.

Weights do not travel through this seam: a vLLM server takes them over NCCL from the trainer, TRL's
route (docs/TRAINING.md, "Rollouts from a vLLM server"). So ``load_weights`` is absent, as on every
backend that takes no weights: capability probes (``getattr(backend, "load_weights", None)``, as
the policy service's LoadWeights and ``fathom serve policy`` do) see none, and code that calls it
anyway gets an ``AttributeError`` that names TRL's route instead of a bare missing attribute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from fathom.core.errors import ModelError
from fathom.models.base import Completion, SamplingParams
from fathom.models.openai_backend import OpenAIBackend
from fathom.models.transformers_backend import validate_params

TOKEN_ID_PREFIX = "token_id:"  # vLLM's format_token_id_placeholder
FINISH_REASONS = ("stop", "length")  # vLLM's other ones ("abort", "error") are failures here

WEIGHT_PUSH_REFUSED = (
    "{name}: weights cannot be pushed into a vLLM server through the model seam. Use TRL's route: "
    "serve the policy with `trl vllm-serve --model MODEL` (in TRL 1.x a wrapper of `VLLM_SERVER_DEV_MODE=1 "
    "vllm serve MODEL --weight-transfer-config '{{\"backend\": \"nccl\"}}' --logprobs-mode "
    "processed_logprobs --max-logprobs -1`), and from the trainer push with "
    "trl.generation.vllm_client.VLLMClient(base_url=...): init_communicator(device) once, then "
    "update_model_params(model) (or update_named_param per tensor) and reset_prefix_cache() after each "
    "optimizer step. NCCL needs the trainer on a CUDA device. See docs/TRAINING.md, "
    "'Rollouts from a vLLM server'"
)


class VLLMBackend(OpenAIBackend):
    """``OpenAIBackend`` plus vLLM's token-level path (``TokenBackend``) and prompt scoring."""

    async def complete_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Completion:
        """Continue exactly ``prompt_ids``: every sampled id (EOS and stop-string ids included) with
        its log-prob, whatever ``params.logprobs`` says; ``text`` without the stop string."""
        validate_params(params)
        ids = token_id_list(prompt_ids, "prompt_ids")
        if self.role.api == "chat":
            raise ModelError(f"{self.name}: token prompts need the completions API, not chat")
        params = replace(params, logprobs=True)
        body = self._sampling_body(params)
        body.update(prompt=ids, logprobs=1, return_tokens_as_token_ids=True, return_token_ids=True,
                    skip_special_tokens=True, include_stop_str_in_output=False)
        if params.choices:  # guided choice: room for the longest choice, whatever max_new_tokens is
            body["max_tokens"] = max(body["max_tokens"], 64)
        started = time.perf_counter()
        data = await self._post("/completions", body)
        try:
            choice = only_choice(data)
            check_prompt_echo(choice, data, ids)
            finish = choice.get("finish_reason")
            if finish not in FINISH_REASONS:
                raise ModelError(f"the completion ended with finish_reason {finish!r}, not stop or length")
            token_ids, logprobs = sampled_tokens(choice)
        except ModelError as exc:
            raise ModelError(f"{self.name}: {exc}") from None
        return self._completion(str(choice.get("text") or ""), choice, data, params, token_ids,
                                logprobs, started)

    async def score_tokens(self, token_ids: list[int], from_position: int) -> list[float]:
        """Log-probs the served weights give to ``token_ids[from_position:]``, each given the ids
        before it: one prefill with ``prompt_logprobs`` (the raw model's). The policy service's
        ScoreTokens uses it for the trainer's weight-sync checks."""
        ids = token_id_list(token_ids, "token_ids")
        if not 1 <= from_position < len(ids):
            raise ModelError(f"from_position must be in [1, {len(ids) - 1}], got {from_position}")
        # prompt_logprobs=1, not 0: vLLM's v1 engine once read 0 as "none" (``if num_prompt_logprobs``
        # in vllm/v1/engine/logprobs.py); the prompt token's own entry is there for any k.
        body = {"model": self.role.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "n": 1,
                "prompt_logprobs": 1, "return_token_ids": True}
        data = await self._post("/completions", body)
        try:
            choice = only_choice(data)
            check_prompt_echo(choice, data, ids)
            scored = prompt_logprobs(choice, ids)
        except ModelError as exc:
            raise ModelError(f"{self.name}: {exc}") from None
        return scored[from_position - 1:]

    @property
    def load_weights(self) -> Callable[[Mapping[str, Any]], str]:
        """Absent (see the module docstring): raises ``AttributeError`` naming TRL's weight sync."""
        raise AttributeError(WEIGHT_PUSH_REFUSED.format(name=self.name))


# ----------------------------------------------------------------- reading vLLM's answers (pure)


def token_id_list(values: Sequence[int], what: str) -> list[int]:
    """``values`` as a non-empty list of token ids (ints >= 0), as vLLM's request model requires."""
    ids = list(values)
    if not ids:
        raise ModelError(f"{what} is empty: there is nothing to continue or score")
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
        raise ModelError(f"{what} must be token ids (integers >= 0)")
    return [int(t) for t in ids]


def only_choice(data: dict[str, Any]) -> dict[str, Any]:
    """The one choice of an n=1, one-prompt answer."""
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise ModelError(f"expected exactly one choice, got: {str(data)[:200]}")
    return choices[0]


def check_prompt_echo(choice: dict[str, Any], data: dict[str, Any], prompt_ids: list[int]) -> None:
    """The server continued (or scored) exactly ``prompt_ids``: its ``prompt_token_ids`` when it
    sends them, and its usage count. A prepended BOS or a truncated prompt would shift every
    position after it."""
    echoed = choice.get("prompt_token_ids")
    if echoed is not None and echoed != prompt_ids:
        raise ModelError(f"the server ran other prompt ids than those sent ({len(echoed)} ids for "
                         f"{len(prompt_ids)} sent; starting {echoed[:4]} for {prompt_ids[:4]})")
    usage = data.get("usage")
    counted = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if isinstance(counted, int) and counted != len(prompt_ids):
        raise ModelError(f"the server counted {counted} prompt tokens for the {len(prompt_ids)} sent")


def sampled_tokens(choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The sampled ids and their log-probs from a choice asked with ``logprobs`` and
    ``return_tokens_as_token_ids``: one ``"token_id:N"`` per log-prob, and ``token_ids`` (when sent)
    the same ids."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        raise ModelError("the answer has no logprobs: a vLLM completions server is needed for token ids")
    tokens, values = lp.get("tokens"), lp.get("token_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list):
        raise ModelError("logprobs without the tokens and token_logprobs lists")
    if len(tokens) != len(values):
        raise ModelError(f"{len(tokens)} sampled tokens but {len(values)} log-probs: they cannot be aligned")
    ids = [_placeholder_id(token) for token in tokens]
    logprobs = [_logprob(value, f"sampled token {i}") for i, value in enumerate(values)]
    echoed = choice.get("token_ids")
    if echoed is not None and echoed != ids:
        raise ModelError(f"token_ids ({len(echoed)}) disagree with the ids of the log-probs ({len(ids)})")
    return ids, logprobs


def prompt_logprobs(choice: dict[str, Any], prompt_ids: list[int]) -> list[float]:
    """Log-prob of each prompt token from position 1 on, given the tokens before it, from vLLM's
    ``prompt_logprobs`` (one entry per prompt token, null first). Looked up by token id, so top-k
    entries and their order do not matter."""
    entries = choice.get("prompt_logprobs")
    if not isinstance(entries, list):
        raise ModelError("the answer has no prompt_logprobs: scoring needs vLLM's prompt_logprobs")
    if len(entries) != len(prompt_ids):
        raise ModelError(f"{len(entries)} prompt log-prob entries for {len(prompt_ids)} prompt tokens: "
                         "they cannot be aligned")
    scored = []
    for position in range(1, len(prompt_ids)):
        entry, token = entries[position], prompt_ids[position]
        own = entry.get(str(token)) if isinstance(entry, dict) else None
        if not isinstance(own, dict):
            raise ModelError(f"prompt position {position} has no log-prob for its token id {token}")
        scored.append(_logprob(own.get("logprob"), f"prompt position {position}"))
    return scored


def _placeholder_id(token: Any) -> int:
    if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
        digits = token[len(TOKEN_ID_PREFIX):]
        if digits.isascii() and digits.isdigit():
            return int(digits)
    raise ModelError(f"sampled token {str(token)[:40]!r} is not a 'token_id:N' string: the server "
                     "ignored return_tokens_as_token_ids (vLLM is needed for token ids)")


def _logprob(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelError(f"{where}: log-prob {value!r} is not a finite number")
    return float(value)
