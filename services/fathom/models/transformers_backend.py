"""In-process generation with transformers: the bundled model in local mode, any hub model otherwise.

One worker thread owns the model. Callers (from any event loop) put requests on a pending list and
wait on a future; the worker takes every pending request that shares the same sampling settings and
generates them as one left-padded batch. So ten concurrent agent turns cost about one generate call,
not ten.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from fathom.core.errors import ModelError
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, Completion, FinishReason, SamplingParams, Usage
from fathom.models.stop_strings import make_stop_criteria, trim_at_stop

log = get_logger(__name__)


@dataclass
class _Request:
    prompt: str | list[int]  # text, or token ids (the token-level path: used as they are)
    params: SamplingParams
    future: Future[Completion]


def validate_params(params: SamplingParams) -> None:
    """Reject settings no backend can honour, before anything is queued."""
    if params.max_new_tokens < 1:
        raise ModelError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if params.temperature < 0 or not math.isfinite(params.temperature):
        raise ModelError(f"temperature must be a finite number >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ModelError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.repetition_penalty <= 0:
        raise ModelError(f"repetition_penalty must be > 0, got {params.repetition_penalty}")
    if params.choices is not None and (not params.choices or any(not c for c in params.choices)):
        raise ModelError("choices must be a non-empty list of non-empty strings")


class TransformersBackend:
    """``ModelBackend`` over a transformers causal LM (hub id or local directory).

    The model loads lazily, in the worker thread, on the first request (or on ``load()``), so
    building a backend never blocks an event loop.
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "auto",
        name: str | None = None,
        max_batch_size: int = 16,
        batch_window_s: float = 0.01,
    ) -> None:
        self.model_ref = model
        self.name = name or model
        self.device = device
        self.dtype = dtype
        self.max_batch_size = max(1, max_batch_size)
        # How long the worker waits for more requests before starting a batch: a few ms of latency
        # buys batching of callers that arrive together (e.g. an asyncio.gather of agent turns).
        self.batch_window_s = batch_window_s
        self._tokenizer: Any = None
        self._model: Any = None
        self._eos_ids: list[int] = []
        self._load_lock = threading.Lock()
        self._pending: list[_Request] = []
        self._pending_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fathom-generate")
        self._closed = False
        # Prefix KV cache for single-prompt requests: an agent's context only grows, and the guided
        # policy issues several short requests over the same long context, so reusing the keys and
        # values of the shared token prefix turns each re-prefill into an incremental one.
        self._prefix: tuple[list[int], Any] | None = None
        self.prefix_tokens_reused = 0
        # Bumped by ``load_weights``: which weights answered a request (the trainer's weight sync).
        self.weights_version = 0
        self.batches_run = 0  # generate / scoring calls made; with requests served, shows batching at work
        self.requests_served = 0

    # ----------------------------------------------------------------- loading

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            with self._load_lock:
                if self._tokenizer is None:
                    self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_ref)
        except Exception as exc:  # OSError for missing files, ValueError for odd configs, ...
            raise ModelError(f"cannot load tokenizer for {self.model_ref!r}: {exc}") from exc
        tokenizer.padding_side = "left"  # decoder-only batches must end on the last prompt token
        return tokenizer

    def load(self) -> None:
        """Load tokenizer and weights now (otherwise the first request does it)."""
        tokenizer = self.tokenizer
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype: Any = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype, None)
            if dtype is None:
                raise ModelError(f"unknown dtype {self.dtype!r} (use auto, float32, bfloat16, float16)")
            started = time.perf_counter()
            try:
                model = AutoModelForCausalLM.from_pretrained(self.model_ref, dtype=dtype)
                model.to(device)  # type: ignore[arg-type]
            except Exception as exc:
                raise ModelError(f"cannot load model {self.model_ref!r} on {device}: {exc}") from exc
            model.eval()
            eos: set[int] = set()
            for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
                if isinstance(source, int):
                    eos.add(source)
                elif source:
                    eos.update(int(x) for x in source)
            if not eos:
                raise ModelError(f"{self.model_ref!r} defines no end-of-sequence token")
            self._eos_ids = sorted(eos)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._model = model
            log.info(
                "model_loaded",
                model=self.name,
                device=device,
                dtype=str(model.dtype),
                seconds=round(time.perf_counter() - started, 2),
            )

    @property
    def context_tokens(self) -> int:
        """The model's own position limit (prompt + generation)."""
        self.load()
        return int(getattr(self._model.config, "max_position_embeddings", 0) or 1 << 30)

    # ----------------------------------------------------------------- ModelBackend

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            from fathom.models.chatml import render_chatml

            return render_chatml(messages, add_generation_prompt)
        rendered = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        return str(rendered)

    def decode_tokens(self, token_ids: list[int]) -> list[str]:
        """Each id as its own text piece (for OpenAI-style ``logprobs.tokens``)."""
        return [self.tokenizer.decode([t], skip_special_tokens=False) for t in token_ids]

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        return (await self.complete_batch([prompt], params))[0]

    # ----------------------------------------------------------------- the token-level path

    def tokenize(self, text: str) -> list[int]:
        """Ids of ``text`` with no special tokens added: pieces of a context join by concatenation."""
        return [int(t) for t in self.tokenizer(text, add_special_tokens=False).input_ids]

    def detokenize(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=False))

    async def complete_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Completion:
        """Continue exactly ``prompt_ids`` (never re-tokenized); ids and log-probs always returned.
        Batched with concurrent text requests of the same settings (``_encode`` takes either)."""
        if not prompt_ids:
            raise ModelError("empty prompt: there is nothing to continue")
        return (await self._submit([list(prompt_ids)], replace(params, logprobs=True)))[0]

    @property
    def policy_version(self) -> str:
        """The weights now loaded: the model reference, and ``@N`` after the N-th weight update."""
        return self.name if self.weights_version == 0 else f"{self.name}@{self.weights_version}"

    def load_weights(self, state_dict: Mapping[str, Any]) -> str:
        """Copy the trainer's weights into the served model and return the new ``policy_version``.

        It runs on the worker thread, between batches, so no request is served half by the old and
        half by the new weights; the prefix KV cache is dropped (its keys and values came from the old
        weights). Every request submitted after this returns is sampled from the new weights.
        Blocking: from async code call it through ``asyncio.to_thread``.
        """
        if self._closed:
            raise ModelError(f"backend {self.name!r} is closed")
        return self._executor.submit(self._load_weights, dict(state_dict)).result()

    def _load_weights(self, state_dict: dict[str, Any]) -> str:
        import torch

        self.load()
        own = self._model.state_dict()
        unknown = sorted(k for k in state_dict if k not in own)
        if unknown:
            raise ModelError(f"load_weights: {len(unknown)} tensors the model lacks, e.g. {unknown[:3]}")
        # Every check before the first copy: a refused update leaves the served weights untouched.
        for key, value in state_dict.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ModelError(f"load_weights: {key} has shape {tuple(value.shape)}, "
                                 f"the model {tuple(own[key].shape)}")
        given = {own[k].data_ptr() for k in state_dict}
        # A tensor may be absent only when it shares storage with one given (tied embeddings, which
        # safetensors files store once); anything else missing would serve a mix of old and new.
        missing = sorted(k for k, t in own.items() if k not in state_dict and t.data_ptr() not in given)
        if missing:
            raise ModelError(f"load_weights: {len(missing)} of the model's tensors are missing, "
                             f"e.g. {missing[:3]}; a weight update must be complete")
        with torch.no_grad():
            for key, value in state_dict.items():
                own[key].copy_(value.detach().to(device=own[key].device, dtype=own[key].dtype))
        self._prefix = None
        self.weights_version += 1
        log.info("weights_loaded", model=self.name, version=self.weights_version, tensors=len(state_dict))
        return self.policy_version

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        return await self._submit(list(prompts), params)

    async def _submit(self, prompts: list[str | list[int]], params: SamplingParams) -> list[Completion]:
        if self._closed:
            raise ModelError(f"backend {self.name!r} is closed")
        validate_params(params)
        if not prompts:
            return []
        requests = [_Request(p, params, Future()) for p in prompts]
        with self._pending_lock:
            self._pending.extend(requests)
        for _ in requests:  # one drain per request, so none is ever left pending
            self._executor.submit(self._drain)
        return list(await asyncio.gather(*(asyncio.wrap_future(r.future) for r in requests)))

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion:
        return await self.complete(self.render_chat(messages), params)

    async def score_tokens(self, token_ids: list[int], from_position: int) -> list[float]:
        """Log-probabilities the loaded weights give to ``token_ids[from_position:]``, each given the
        ids before it: one forward pass, on the model's own worker thread (so it never overlaps a
        generate call). The policy service's ScoreTokens uses it for the trainer's weight-sync checks."""
        if self._closed:
            raise ModelError(f"backend {self.name!r} is closed")
        if not 1 <= from_position < len(token_ids):
            raise ModelError(f"from_position must be in [1, {len(token_ids) - 1}], got {from_position}")
        future = self._executor.submit(self._score_tokens, list(token_ids), from_position)
        return await asyncio.wrap_future(future)

    def _score_tokens(self, ids: list[int], start: int) -> list[float]:
        import torch

        self.load()
        vocab = int(self._model.get_output_embeddings().weight.shape[0])
        if any(not 0 <= t < vocab for t in ids):
            raise ModelError(f"token ids must be in [0, {vocab}) for {self.name!r}")
        with torch.inference_mode():
            x = torch.tensor([ids], device=self._model.device)
            logits = self._model(input_ids=x).logits[0, start - 1:-1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            picked = logprobs.gather(1, x[0, start:, None]).squeeze(1)
        return [float(v) for v in picked.tolist()]

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
        with self._pending_lock:
            leftover, self._pending = self._pending, []
        for request in leftover:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(ModelError(f"backend {self.name!r} closed"))
        self._model = None

    # ----------------------------------------------------------------- worker thread

    def _take_batch(self) -> list[_Request]:
        with self._pending_lock:
            if not self._pending:
                return []
            first = self._pending[0]
            # A seeded request runs alone: its sample must not depend on who else was queued.
            limit = 1 if first.params.seed is not None else self.max_batch_size
            batch = [r for r in self._pending if r.params == first.params][:limit]
            taken = {id(r) for r in batch}
            self._pending = [r for r in self._pending if id(r) not in taken]
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _drain(self) -> None:
        with self._pending_lock:
            if not self._pending:
                return
        if self.batch_window_s > 0:
            time.sleep(self.batch_window_s)
        batch = self._take_batch()
        if not batch:
            return
        params = batch[0].params
        prompts = [r.prompt for r in batch]
        try:
            self.load()
            if params.choices:
                results = self._score_choices(prompts, params)
            else:
                results = self._generate(prompts, params)
        except Exception as exc:
            error = (
                exc if isinstance(exc, ModelError) else ModelError(f"{self.name}: generation failed: {exc}")
            )
            if not isinstance(exc, ModelError):
                log.exception("generation_failed", model=self.name, batch=len(batch))
            for r in batch:
                r.future.set_exception(error)
            return
        self.batches_run += 1
        self.requests_served += len(batch)
        for r, result in zip(batch, results, strict=True):
            r.future.set_result(result)

    def _encode(self, prompts: list[str | list[int]]) -> list[list[int]]:
        encoded = [list(p) if isinstance(p, list) else list(self._tokenizer(p).input_ids) for p in prompts]
        for ids in encoded:
            if not ids:
                raise ModelError("empty prompt: there is nothing to continue")
        return encoded

    def _left_pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        pad = int(self._tokenizer.pad_token_id)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        device = self._model.device
        return ids.to(device), mask.to(device)

    def _generate(self, prompts: list[str | list[int]], params: SamplingParams) -> list[Completion]:
        import torch
        from transformers import (
            GenerationConfig,
            LogitsProcessorList,
            StoppingCriteriaList,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        started = time.perf_counter()
        encoded = self._encode(prompts)
        longest = max(len(r) for r in encoded)
        limit = int(getattr(self._model.config, "max_position_embeddings", 0) or 1 << 30)
        if longest >= limit:
            raise ModelError(f"prompt of {longest} tokens does not fit the model's {limit}-token context")
        max_new = min(params.max_new_tokens, limit - longest)
        input_ids, attention_mask = self._left_pad(encoded)
        width = input_ids.shape[1]

        sample = params.temperature > 0
        # Our own warpers, placed before the log-prob recorder, so the recorded log-probabilities are
        # those of the distribution the token was drawn from. The model's generation_config sampling
        # defaults (top_k etc.) are deliberately not inherited: SamplingParams says everything.
        processors: list[Any] = []
        if sample and params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if sample and params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
        recorder = _LogprobRecorder() if params.logprobs else None
        if recorder is not None:
            processors.append(recorder)
        criteria = make_stop_criteria(self._tokenizer, params.stop, width) if params.stop else None
        # Sampling knobs are neutralised here (our warpers above do the work); setting them for greedy
        # decoding would only earn a warning.
        knobs: dict[str, Any] = {"temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {}
        config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=sample,
            **knobs,
            repetition_penalty=params.repetition_penalty,
            pad_token_id=int(self._tokenizer.pad_token_id),
            eos_token_id=self._eos_ids,
            bos_token_id=self._model.generation_config.bos_token_id,
            return_dict_in_generate=True,
        )
        if params.seed is not None:
            torch.manual_seed(params.seed)
        cache = self._take_prefix(encoded[0]) if len(encoded) == 1 else None
        if cache is not None:
            config.return_dict_in_generate = True
        try:
            with torch.inference_mode():
                out = self._model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=config,
                    logits_processor=LogitsProcessorList(processors),
                    stopping_criteria=StoppingCriteriaList([criteria]) if criteria is not None else None,
                    cache=cache,
                )
        except Exception:
            self._prefix = None
            raise
        generated = out.sequences[:, width:]
        if len(encoded) == 1:
            self._keep_prefix(out.sequences[0].tolist(), _output_cache(out))
        logprobs = recorder.finish(generated) if recorder is not None else None
        latency = time.perf_counter() - started

        eos = set(self._eos_ids)
        results: list[Completion] = []
        for row in range(generated.shape[0]):
            ids = generated[row].tolist()
            end, finish = len(ids), "length"
            eos_at = next((i for i, t in enumerate(ids) if t in eos), None)
            if eos_at is not None:
                end, finish = eos_at + 1, "stop"
            stopped = criteria.stopped_at.get(row) if criteria is not None else None
            if stopped is not None and stopped <= end:
                end, finish = stopped, "stop"
            ids = ids[:end]
            text = self._tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=True)
            text, stop = trim_at_stop(text, params.stop)
            finish_reason: FinishReason = "stop" if stop is not None else finish  # type: ignore[assignment]
            results.append(
                Completion(
                    text=text,
                    finish_reason=finish_reason,
                    usage=Usage(prompt_tokens=len(encoded[row]), completion_tokens=len(ids)),
                    token_ids=ids,
                    logprobs=logprobs[row][:end] if logprobs is not None else None,
                    stop=stop,
                    model=self.name,
                    latency_s=latency,
                )
            )
        return results

    # ----------------------------------------------------------------- prefix cache

    _MIN_REUSE = 32  # below this many shared tokens a fresh prefill is as cheap as bookkeeping

    def _take_prefix(self, ids: list[int]) -> Any:
        """The cached KV state cropped to the longest prefix shared with ``ids`` (leaving at least
        one token to feed), or None. The cache object is handed over, not copied."""
        if self._prefix is None:
            return None
        cached_ids, cache = self._prefix
        self._prefix = None
        n = 0
        limit = min(len(cached_ids), len(ids) - 1, int(cache.get_seq_length()))
        while n < limit and cached_ids[n] == ids[n]:
            n += 1
        if n < self._MIN_REUSE:
            return None
        _crop(cache, n)
        self.prefix_tokens_reused += n
        return cache

    def _keep_prefix(self, sequence: list[int], cache: Any) -> None:
        if cache is None or not hasattr(cache, "crop"):
            self._prefix = None
            return
        length = int(cache.get_seq_length())
        self._prefix = (sequence[:length], cache)

    def _score_choices_cached(self, prompt_ids: list[int], choice_ids: list[list[int]]) -> list[list[float]]:
        """Per-token log-probabilities of each choice after one prompt, reusing the prefix cache:
        the prompt is prefilled incrementally once, then each choice is fed and cropped away."""
        import torch
        from transformers import DynamicCache

        cache = self._take_prefix(prompt_ids) if self._prefix is not None else None
        start = 0 if cache is None else int(cache.get_seq_length())
        if cache is None:
            cache = DynamicCache(config=self._model.config)
        device = self._model.device
        try:
            with torch.inference_mode():
                rest = torch.tensor([prompt_ids[start:]], device=device)
                out = self._model(input_ids=rest, cache=cache, use_cache=True)
                last = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                cache = _output_cache(out)
                plen = len(prompt_ids)
                scores: list[list[float]] = []
                for ids in choice_ids:
                    per_token = [float(last[ids[0]])]
                    if len(ids) > 1:
                        feed = torch.tensor([ids[:-1]], device=device)
                        o = self._model(input_ids=feed, cache=cache, use_cache=True)
                        lp = torch.log_softmax(o.logits[0].float(), dim=-1)
                        targets = torch.tensor(ids[1:], device=device)
                        per_token += lp.gather(1, targets[:, None]).squeeze(1).tolist()
                        cache = _output_cache(o)
                        _crop(cache, plen)
                    scores.append(per_token)
        except Exception:
            self._prefix = None
            raise
        self._prefix = (list(prompt_ids), cache)
        return scores

    def _score_choices(self, prompts: list[str | list[int]], params: SamplingParams) -> list[Completion]:
        """Pick, for each prompt, the choice with the highest total log-likelihood (one forward pass)."""
        import torch

        started = time.perf_counter()
        choices = list(params.choices or ())
        encoded = self._encode(prompts)
        # Choices are tokenized on their own, as generation would have produced them after the prompt.
        choice_ids = [list(self._tokenizer(c, add_special_tokens=False).input_ids) for c in choices]
        if len(encoded) == 1:
            per_choice = self._score_choices_cached(encoded[0], choice_ids)
            totals = [sum(v) for v in per_choice]
            best_index = max(range(len(choices)), key=lambda i: totals[i])
            return [
                Completion(
                    text=choices[best_index],
                    finish_reason="stop",
                    usage=Usage(prompt_tokens=len(encoded[0]), completion_tokens=len(choice_ids[best_index])),
                    token_ids=choice_ids[best_index],
                    logprobs=per_choice[best_index] if params.logprobs else None,
                    model=self.name,
                    latency_s=time.perf_counter() - started,
                )
            ]
        rows = [p + c for p in encoded for c in choice_ids]
        input_ids, attention_mask = self._left_pad(rows)
        width = input_ids.shape[1]
        with torch.inference_mode():
            logits = self._model(input_ids=input_ids, attention_mask=attention_mask).logits
        # Logits at position j predict token j+1; with left padding every row ends at width-1.
        results: list[Completion] = []
        for p_index, prompt_ids in enumerate(encoded):
            best: tuple[float, int, list[float]] | None = None
            for c_index, ids in enumerate(choice_ids):
                row = p_index * len(choice_ids) + c_index
                n = len(ids)
                positions = torch.arange(width - n - 1, width - 1, device=logits.device)
                step_logprobs = torch.log_softmax(logits[row, positions].float(), dim=-1)
                targets = torch.tensor(ids, device=logits.device)
                per_token = step_logprobs.gather(1, targets[:, None]).squeeze(1).tolist()
                total = float(sum(per_token))
                if best is None or total > best[0]:
                    best = (total, c_index, per_token)
            assert best is not None
            _, c_index, per_token = best
            results.append(
                Completion(
                    text=choices[c_index],
                    finish_reason="stop",
                    usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(choice_ids[c_index])),
                    token_ids=choice_ids[c_index],
                    logprobs=per_token if params.logprobs else None,
                    model=self.name,
                    latency_s=time.perf_counter() - started,
                )
            )
        return results


def _output_cache(out: Any) -> Any:
    """The KV cache a model/generate output carries (named ``cache`` in transformers 5)."""
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def _crop(cache: Any, length: int) -> None:
    """Keep the first ``length`` positions of a KV cache (transformers 5 crops by a negative count)."""
    remove = int(cache.get_seq_length()) - length
    if remove > 0:
        cache.crop(-remove)


class _LogprobRecorder:
    """Last logits processor: keeps log-softmax of this step's scores, to read the chosen token's
    log-probability next step (when the chosen token shows up in ``input_ids``).

    This holds one step of scores at a time instead of ``output_scores``' whole [steps x vocab]
    history, which for a 150k-token vocabulary and an 8k-token turn would be gigabytes per row.
    """

    def __init__(self) -> None:
        self._last: Any = None
        self._values: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._last is not None:
            self._values.append(self._last.gather(1, input_ids[:, -1:]).squeeze(1))
        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated: Any) -> list[list[float]]:
        import torch

        if self._last is not None and generated.shape[1] > len(self._values):
            self._values.append(self._last.gather(1, generated[:, -1:]).squeeze(1))
        self._last = None
        if not self._values:
            return [[] for _ in range(generated.shape[0])]
        result: list[list[float]] = torch.stack(self._values, dim=1).tolist()
        return result
