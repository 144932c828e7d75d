"""Any OpenAI-compatible server: vLLM and SGLang in production, llama.cpp server, OpenAI itself.

``role.api == "completions"`` sends raw prompt text to ``/completions`` (Fathom models speak ChatML
text, and the agent needs exact control of the prompt); ``"chat"`` sends messages to
``/chat/completions``. Token ids and log-probabilities are returned when the server provides them
(vLLM does with ``logprobs`` and ``return_tokens_as_token_ids``).

Token counts (``count_tokens``) come from the model's tokenizer when it is in the local Hugging
Face cache, else from the server's ``POST /tokenize`` (vLLM's endpoint, at the server root). Only
where neither exists (api.openai.com, servers without the endpoint) is a count estimated as one
token per four characters, with a warning; a role that needs exact counts (the policy's context
budget) calls ``require_exact_token_counts`` and gets a ``ConfigError`` instead of an estimate.
Server counts are blocking HTTP calls (the seam's ``count_tokens`` is synchronous), cached by text.

Retries: only transient failures (connection errors, timeouts, 408/409/429/5xx) are retried, with
exponential backoff and full jitter, honouring ``Retry-After``. A 400/401/404 is a mistake in the
request or configuration; retrying cannot fix it, so it surfaces at once as a ``ModelError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import random
import threading
import time
from collections import OrderedDict
from typing import Any, Literal
from urllib.parse import urlparse

import httpx

from fathom.core.config import ModelRole
from fathom.core.errors import ConfigError, ModelError
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, Completion, FinishReason, SamplingParams, Usage
from fathom.models.chatml import render_chatml
from fathom.models.stop_strings import trim_at_stop
from fathom.models.transformers_backend import validate_params

log = get_logger(__name__)

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_TOKEN_ID_PREFIX = "token_id:"
_COUNT_CACHE_SIZE = 512  # the agent counts the same context several times per turn

TokenCounter = Literal["tokenizer", "server", "estimate"]


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUS or status >= 500


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-format error body, or the start of whatever came back."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):  # vLLM's older error shape
            return str(body["message"])
    return str(body)[:300]


class OpenAIBackend:
    """``ModelBackend`` over an OpenAI-compatible HTTP endpoint."""

    def __init__(
        self,
        role: ModelRole,
        name: str | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        extensions: bool | None = None,
        choice_field: Literal["guided_choice", "structured_outputs"] = "guided_choice",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not role.base_url:
            raise ConfigError(f"the openai backend for model {role.model!r} needs base_url")
        self.role = role
        self.name = name or role.model
        self.base_url = role.base_url.rstrip("/")
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # vLLM/SGLang accept extra fields (repetition_penalty, return_tokens_as_token_ids,
        # guided_choice); api.openai.com rejects unknown fields with a 400, so leave them off there.
        host = urlparse(self.base_url).hostname or ""
        self.extensions = extensions if extensions is not None else not host.endswith("openai.com")
        self.choice_field = choice_field
        self._transport = transport
        self._api_key = role.api_key.get_secret_value() if role.api_key else os.environ.get("OPENAI_API_KEY")
        # httpx clients and asyncio semaphores belong to one event loop; keep one pair per loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._tokenizer: Any = None
        self._tokenizer_tried = False
        self._counter: TokenCounter | None = None  # decided on first need
        self._no_server_count = ""  # why the server cannot count, once known
        self._exact_for: str | None = None  # what needs exact counts, once required
        self._warned_estimate = False
        self._counts: OrderedDict[bytes, int] = OrderedDict()
        self._counts_lock = threading.Lock()
        self._sync_client: httpx.Client | None = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r}, api={self.role.api!r})"

    # ----------------------------------------------------------------- tokens and chat text

    def _load_tokenizer(self) -> Any:
        if not self._tokenizer_tried:
            self._tokenizer_tried = True
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.role.model, local_files_only=True)
            except Exception:  # not in the local cache, not a hub id at all (e.g. "gpt-4.1-mini"), ...
                self._tokenizer = None
        return self._tokenizer

    @property
    def tokenize_url(self) -> str:
        """vLLM serves ``/tokenize`` beside ``/v1``, not under it."""
        return self.base_url.removesuffix("/v1") + "/tokenize"

    def token_counter(self) -> TokenCounter:
        """How ``count_tokens`` counts: the local tokenizer, the server, or the chars/4 estimate.
        Asks the server once; a server that cannot be reached raises ``ModelError`` (undecided)."""
        if self._counter is None:
            if self._load_tokenizer() is not None:
                self._counter = "tokenizer"
            elif not self.extensions:  # api.openai.com has no tokenize endpoint: do not knock
                self._no_server_count = "this API has no tokenize endpoint"
                self._counter = "estimate"
            else:
                self._counter = "server" if self._server_count("") is not None else "estimate"
        return self._counter

    def require_exact_token_counts(self, needed_for: str = "exact counts are required") -> None:
        """Never estimate from now on; ``ConfigError`` (refuse to start) when counting exactly is
        impossible. A server that cannot be reached yet is not a refusal: the first count then
        retries, and fails loudly if it still cannot count."""
        self._exact_for = needed_for
        try:
            counter = self.token_counter()
        except ModelError as exc:
            log.warning("token_count_check_deferred", model=self.name, error=str(exc))
            return
        if counter == "estimate":
            self._close_sync_client()  # refused: leave no connection open behind
            raise ConfigError(self._no_exact_count_message())

    def _no_exact_count_message(self) -> str:
        return (
            f"cannot count the tokens of {self.role.model!r} exactly ({self._exact_for}): its "
            f"tokenizer is not in the local Hugging Face cache, and {self.tokenize_url} cannot count "
            f"({self._no_server_count}). Serve the model with vLLM (which has /tokenize), or put its "
            "tokenizer in the cache (huggingface-cli download MODEL --include 'tokenizer*')"
        )

    def count_tokens(self, text: str) -> int:
        """The model's own count (local tokenizer or the server's /tokenize); the chars/4 estimate
        only where neither exists and exact counts were not required, with a warning."""
        counter = self.token_counter()
        if counter == "tokenizer":
            return len(self._tokenizer(text, add_special_tokens=False).input_ids)
        if counter == "server":
            count = self._server_count(text)
            if count is None:  # the endpoint went away (server replaced by another build)
                self._counter = "estimate"
                return self.count_tokens(text)
            return count
        if self._exact_for is not None:
            raise ConfigError(self._no_exact_count_message())
        if not self._warned_estimate:
            self._warned_estimate = True
            log.warning("token_counts_estimated", model=self.name, method="characters/4",
                        reason=self._no_server_count)
        return math.ceil(len(text) / 4)

    def _server_count(self, text: str) -> int | None:
        """The server's count of ``text`` (cached), or None when it has no usable /tokenize."""
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._counts_lock:
            if key in self._counts:
                self._counts.move_to_end(key)
                return self._counts[key]
        body = {"model": self.role.model, "prompt": text, "add_special_tokens": False}
        data = self._post_sync(self.tokenize_url, body)
        if data is None:
            return None
        count = data.get("count")
        if not isinstance(count, int) or isinstance(count, bool):
            tokens = data.get("tokens")
            if not isinstance(tokens, list):
                self._no_server_count = "it answered without a token count"
                return None
            count = len(tokens)
        with self._counts_lock:
            self._counts[key] = count
            if len(self._counts) > _COUNT_CACHE_SIZE:
                self._counts.popitem(last=False)
        return count

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        tokenizer = self._load_tokenizer()
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return str(
                tokenizer.apply_chat_template(
                    [{"role": m.role, "content": m.content} for m in messages],
                    tokenize=False,
                    add_generation_prompt=add_generation_prompt,
                )
            )
        return render_chatml(messages, add_generation_prompt)

    # ----------------------------------------------------------------- ModelBackend

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        validate_params(params)
        if self.role.api == "chat":
            # A chat-only server: send the prompt as one user message.
            return await self._chat([{"role": "user", "content": prompt}], params)
        return await self._completions(prompt, params)

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        # The server batches concurrent requests itself; the semaphore bounds how many we send.
        return list(await asyncio.gather(*(self.complete(p, params) for p in prompts)))

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion:
        validate_params(params)
        if self.role.api == "completions":
            return await self._completions(self.render_chat(messages), params)
        return await self._chat([{"role": m.role, "content": m.content} for m in messages], params)

    # The token-level path (ids in; sampled ids and log-probs out) is vLLM's: ``VLLMBackend``
    # (models/vllm_backend.py), which the factory builds for every OpenAI-compatible role.

    def tokenize(self, text: str) -> list[int]:
        """Ids of ``text`` (no special tokens): the local tokenizer, else the server's /tokenize."""
        if self._load_tokenizer() is not None:
            return [int(t) for t in self._tokenizer(text, add_special_tokens=False).input_ids]
        body = {"model": self.role.model, "prompt": text, "add_special_tokens": False}
        data = self._post_sync(self.tokenize_url, body)
        tokens = data.get("tokens") if data is not None else None
        if not isinstance(tokens, list):
            raise ModelError(f"{self.name}: no tokenizer here and no /tokenize on the server")
        return [int(t) for t in tokens]

    def detokenize(self, token_ids: list[int]) -> str:
        """Text of ``token_ids``: the local tokenizer, else the server's /detokenize (vLLM)."""
        if self._load_tokenizer() is not None:
            return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=False))
        url = self.base_url.removesuffix("/v1") + "/detokenize"
        data = self._post_sync(url, {"model": self.role.model, "tokens": [int(t) for t in token_ids]})
        if data is None or not isinstance(data.get("prompt"), str):
            raise ModelError(f"{self.name}: no tokenizer here and no /detokenize on the server")
        return str(data["prompt"])

    def _close_sync_client(self) -> None:
        with self._counts_lock:
            sync_client, self._sync_client = self._sync_client, None
        if sync_client is not None:
            sync_client.close()

    async def aclose(self) -> None:
        self._close_sync_client()
        client, self._client, self._loop, self._semaphore = self._client, None, None, None
        if client is not None:
            # RuntimeError: created on a loop that is gone; its sockets went with it.
            with contextlib.suppress(RuntimeError):
                await client.aclose()

    # ----------------------------------------------------------------- requests

    def _sampling_body(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.role.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if self.extensions:
            if params.repetition_penalty != 1.0:
                body["repetition_penalty"] = params.repetition_penalty
            if params.logprobs:
                body["return_tokens_as_token_ids"] = True
            if params.choices:
                if self.choice_field == "structured_outputs":
                    body["structured_outputs"] = {"choice": list(params.choices)}
                else:
                    body["guided_choice"] = list(params.choices)
        return body

    async def _completions(self, prompt: str, params: SamplingParams) -> Completion:
        body = self._sampling_body(params)
        body["prompt"] = prompt
        if params.logprobs:
            body["logprobs"] = 1
        started = time.perf_counter()
        data = await self._post("/completions", body)
        choice = _first_choice(data)
        token_ids: list[int] | None = None
        logprobs: list[float] | None = None
        lp = choice.get("logprobs")
        if isinstance(lp, dict) and lp.get("token_logprobs") is not None:
            logprobs = [float(x) if x is not None else 0.0 for x in lp["token_logprobs"]]
            token_ids = _token_ids_from(lp.get("tokens") or [])
        if isinstance(choice.get("token_ids"), list):  # vLLM return_token_ids
            token_ids = [int(t) for t in choice["token_ids"]]
        return self._completion(
            str(choice.get("text") or ""), choice, data, params, token_ids, logprobs, started
        )

    async def _chat(self, messages: list[dict[str, str]], params: SamplingParams) -> Completion:
        body = self._sampling_body(params)
        body["messages"] = messages
        if params.logprobs:
            body["logprobs"] = True
        started = time.perf_counter()
        data = await self._post("/chat/completions", body)
        choice = _first_choice(data)
        message = choice.get("message") or {}
        token_ids: list[int] | None = None
        logprobs: list[float] | None = None
        lp = choice.get("logprobs")
        if isinstance(lp, dict) and isinstance(lp.get("content"), list):
            logprobs = [float(item.get("logprob", 0.0)) for item in lp["content"]]
            token_ids = _token_ids_from([item.get("token", "") for item in lp["content"]])
        text = str(message.get("content") or "")
        return self._completion(text, choice, data, params, token_ids, logprobs, started)

    def _completion(
        self,
        text: str,
        choice: dict[str, Any],
        data: dict[str, Any],
        params: SamplingParams,
        token_ids: list[int] | None,
        logprobs: list[float] | None,
        started: float,
    ) -> Completion:
        raw_finish = choice.get("finish_reason")
        finish: FinishReason = "length" if raw_finish == "length" else "stop"
        stop = choice.get("stop_reason") if isinstance(choice.get("stop_reason"), str) else None
        # Servers differ on whether the stop string is kept; trim it ourselves so the contract holds.
        trimmed, found = trim_at_stop(text, params.stop)
        if found is not None:
            text, stop, finish = trimmed, found, "stop"
        if params.choices:
            text = _match_choice(text, params.choices)
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            ),
            token_ids=token_ids,
            logprobs=logprobs if params.logprobs else None,
            stop=stop if stop in params.stop else None,
            model=str(data.get("model") or self.name),
            latency_s=time.perf_counter() - started,
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.role.timeout_s, connect=min(10.0, self.role.timeout_s))

    def _post_sync(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST for ``count_tokens`` (synchronous by the seam's contract), retried like ``_post``.
        None when the server has no such endpoint (404/405) or rejects the request (4xx)."""
        with self._counts_lock:
            if self._sync_client is None:
                self._sync_client = httpx.Client(headers=self._headers(), timeout=self._timeout())
            client = self._sync_client
        attempts = max(0, self.role.max_retries) + 1
        last_error = ""
        for attempt in range(attempts):
            try:
                response = client.post(url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    try:
                        data = response.json()
                    except ValueError:
                        data = None
                    if isinstance(data, dict):
                        return data
                    self._no_server_count = "it answered with something other than a JSON object"
                    return None
                message = _error_message(response)
                if not is_transient_status(response.status_code):
                    self._no_server_count = f"HTTP {response.status_code}: {message}"
                    return None
                last_error = f"HTTP {response.status_code}: {message}"
            if attempt + 1 < attempts:
                time.sleep(self._backoff(attempt))
        raise ModelError(f"{self.name}: {url} failed after {attempts} attempts: {last_error}")

    def _state(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._semaphore is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers(),
                timeout=self._timeout(),
                transport=self._transport,
            )
            self._semaphore = asyncio.Semaphore(max(1, self.role.concurrency))
            self._loop = loop
        return self._client, self._semaphore

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        client, semaphore = self._state()
        attempts = max(0, self.role.max_retries) + 1
        last_error = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            async with semaphore:
                try:
                    response = await client.post(path, json=body)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code < 400:
                        try:
                            data = response.json()
                        except ValueError as exc:
                            raise ModelError(f"{self.name}: {path} returned invalid JSON") from exc
                        if not isinstance(data, dict):
                            raise ModelError(
                                f"{self.name}: {path} returned {type(data).__name__}, not an object"
                            )
                        return data
                    message = _error_message(response)
                    if not is_transient_status(response.status_code):
                        raise ModelError(f"{self.name}: HTTP {response.status_code} from {path}: {message}")
                    last_error = f"HTTP {response.status_code}: {message}"
                    retry_after = _retry_after(response)
            if attempt + 1 < attempts:
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                log.warning(
                    "model_request_retry",
                    model=self.name,
                    path=path,
                    attempt=attempt + 1,
                    error=last_error,
                    delay_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
        raise ModelError(f"{self.name}: {path} failed after {attempts} attempts: {last_error}")

    def _backoff(self, attempt: int) -> float:
        # "Full jitter": spreads retries of many callers so they do not hit a recovering server together.
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * (2**attempt)))


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ModelError(f"response has no choices: {str(data)[:200]}")
    return choices[0]


def _token_ids_from(tokens: list[Any]) -> list[int] | None:
    """Ids from vLLM's ``token_id:123`` token strings; None if the server sent plain text pieces."""
    ids: list[int] = []
    for token in tokens:
        if not isinstance(token, str) or not token.startswith(_TOKEN_ID_PREFIX):
            return None
        try:
            ids.append(int(token[len(_TOKEN_ID_PREFIX) :]))
        except ValueError:
            return None
    return ids


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return None


def _match_choice(text: str, choices: tuple[str, ...]) -> str:
    """The choice a constrained reply names. Servers without guided decoding may add whitespace or
    punctuation; anything that names no single choice is an error, never a guess."""
    if text in choices:
        return text
    stripped = text.strip()
    if stripped in choices:
        return stripped
    starting = [c for c in choices if stripped.startswith(c.strip())]
    if len(starting) >= 1:
        return max(starting, key=len)
    raise ModelError(
        f"the model answered {text[:80]!r}, which is none of the allowed choices {list(choices)}"
    )
