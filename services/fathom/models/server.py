"""A small OpenAI-compatible HTTP server over any ``ModelBackend`` (non-streaming).

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /health``,
and vLLM's ``POST /tokenize`` and ``POST /detokenize`` (at the root, as vLLM serves them). Responses
follow vLLM's shapes and bytes (compact JSON, as Starlette renders vLLM's pydantic answers),
including ``logprobs`` (``tokens`` / ``token_logprobs`` on completions, ``logprobs.content[]`` on
chat), ``return_tokens_as_token_ids`` and ``guided_choice`` / ``structured_outputs.choice``.

The token-level path, for a backend that serves it (``TokenBackend``): ``prompt`` as a list of token
ids (or a list of such lists) is continued exactly, via ``complete_tokens``; ``return_token_ids``
adds ``token_ids`` / ``prompt_token_ids`` to each choice; ``prompt_logprobs`` adds vLLM's
``[null, {"<id>": {"logprob", "rank", "decoded_token"}}, ...]`` for token-id prompts, from
``score_tokens``. Two differences from vLLM there: only the prompt token's own entry is given
(whatever k is asked) and its ``rank`` is null. This is how ``VLLMBackend`` is tested against a real
model (tests/models/test_server_tokens.py).

Local mode uses it to expose the bundled model as a model server, and tests use it to drive
``OpenAIBackend`` against a real model.

Built on asyncio streams and h11 (the HTTP/1.1 state machine httpx itself uses) rather than a web
framework: a handful of endpoints do not need one. ``JSONServer`` is that HTTP layer alone, for
servers that answer JSON from one ``dispatch`` method.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import h11

from fathom.core.errors import ModelError
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, Completion, ModelBackend, SamplingParams, supports_tokens
from fathom.models.transformers_backend import validate_params

log = get_logger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
LOGPROB_FLOOR = -9999.0  # vLLM sends -inf as this (JSON has no infinity): serving.py, clamp_prompt_logprobs
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 405: "MethodNotAllowed", 413: "RequestTooLarge"}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error format."""
    kind = _ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "Error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


@dataclass
class ServerStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


def encode_json(payload: dict[str, Any]) -> bytes:
    """JSON as vLLM's answers go out: Starlette's ``JSONResponse.render`` (compact, UTF-8, no NaN)."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


class JSONServer:
    """An HTTP/1.1 server (keep-alive, real sockets) whose whole request logic is ``dispatch``:
    method, path and body in; a status and a JSON object (or raw body bytes) out."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = ServerStats()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port: int | None = None

    async def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        raise HTTPError(404, f"no route {path}")

    # ----------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._connection, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("model_server_started", host=host, port=self.port, model=self.name)
        return self.port

    async def serve_forever(self) -> None:
        if self._server is None:
            raise RuntimeError("start() the server first")
        async with self._server:
            await self._server.serve_forever()

    async def stop(self) -> None:
        """Stop listening and end the connections still open (kept alive, or mid-request): before
        Python 3.12 ``wait_closed`` does not wait for them, and their tasks would outlive the loop."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        connections, self._connections = list(self._connections), set()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    # ----------------------------------------------------------------- HTTP

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    break
                status, data = await self._respond_to(request, body)
                headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                writer.write(conn.send(h11.Data(data=data)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await reader.read(65536)
                conn.receive_data(chunk)  # b"" marks end of stream
                if not chunk and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body.extend(event.data)
                if len(body) > MAX_BODY_BYTES:
                    raise h11.RemoteProtocolError("body too large")
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""

    async def _respond_to(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        self.stats.requests += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            method = request.method.decode()
            path = request.target.decode().split("?", 1)[0]
            try:
                status, payload = await self.dispatch(method, path, body)
            except HTTPError as exc:
                status, payload = exc.status, error_body(exc.status, exc.message, exc.param)
            except ModelError as exc:
                status, payload = 500, error_body(500, str(exc))
            except Exception as exc:  # a bug must not kill the connection loop
                log.exception("model_server_error", path=path)
                status, payload = 500, error_body(500, f"internal error: {type(exc).__name__}")
            try:
                data = payload if isinstance(payload, bytes) else encode_json(payload)
            except ValueError as exc:  # NaN or infinity in an answer: a bug, said as one
                log.exception("model_server_error", path=path)
                status, data = 500, encode_json(error_body(500, f"internal error: {exc}"))
        finally:
            self.stats.in_flight -= 1
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        return status, data


class ModelServer(JSONServer):
    """Serves one backend under one model name. ``dispatch`` is the whole request logic (no I/O)."""

    def __init__(
        self, backend: ModelBackend, model_name: str | None = None, defaults: SamplingParams | None = None
    ):
        super().__init__(model_name or backend.name)
        self.backend = backend
        self.model_name = self.name
        self.defaults = defaults or SamplingParams(max_new_tokens=256, temperature=0.6)

    # ----------------------------------------------------------------- endpoints

    async def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        route = path.rstrip("/")
        if route == "/health":
            return 200, {"status": "ok"}
        if route == "/tokenize":
            if method != "POST":
                raise HTTPError(405, f"{method} not allowed on {path}")
            request = _parse_json(body)
            self._check_model(request)
            return 200, self._tokenize(request)
        if route == "/detokenize":
            if method != "POST":
                raise HTTPError(405, f"{method} not allowed on {path}")
            request = _parse_json(body)
            self._check_model(request)
            return 200, self._detokenize(request)
        if route == "/v1/models":
            if method != "GET":
                raise HTTPError(405, f"{method} not allowed on {path}")
            return 200, self._models()
        if route in ("/v1/completions", "/v1/chat/completions"):
            if method != "POST":
                raise HTTPError(405, f"{method} not allowed on {path}")
            request = _parse_json(body)
            self._check_model(request)
            if route == "/v1/completions":
                return 200, await self._completions(request)
            return 200, await self._chat(request)
        raise HTTPError(404, f"no route {path}")

    def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "fathom"}],
        }

    def _tokenize(self, request: dict[str, Any]) -> dict[str, Any]:
        """vLLM's ``/tokenize`` for a prompt: ``{"count", "max_model_len", "tokens"}``."""
        prompt = request.get("prompt")
        if not isinstance(prompt, str):
            raise HTTPError(400, "prompt must be a string (messages are not supported here)", "prompt")
        add_special = request.get("add_special_tokens", True)
        if not isinstance(add_special, bool):
            raise HTTPError(400, "add_special_tokens must be a boolean", "add_special_tokens")
        tokenizer = getattr(self.backend, "tokenizer", None)
        tokens: list[int] | None
        if tokenizer is not None:
            tokens = [int(t) for t in tokenizer(prompt, add_special_tokens=add_special).input_ids]
            count = len(tokens)
        else:  # a backend that only counts: the count is what clients need
            tokens, count = None, self.backend.count_tokens(prompt)
        window = getattr(self.backend, "context_tokens", None)
        return {"count": count, "max_model_len": window if isinstance(window, int) else None,
                "tokens": tokens, "token_strs": None}

    def _detokenize(self, request: dict[str, Any]) -> dict[str, Any]:
        """vLLM's ``/detokenize``: ``{"tokens": [ids]}`` in, ``{"prompt": text}`` out."""
        tokens = request.get("tokens")
        if not isinstance(tokens, list) or not _is_token_ids(tokens):
            raise HTTPError(400, "tokens must be a list of token ids (integers >= 0)", "tokens")
        detokenize = getattr(self.backend, "detokenize", None)
        if detokenize is None:
            raise HTTPError(400, f"{self.model_name} cannot detokenize", "tokens")
        return {"prompt": str(detokenize(list(tokens)))}

    def _check_model(self, request: dict[str, Any]) -> None:
        model = request.get("model")
        if model is not None and model != self.model_name:
            raise HTTPError(404, f"The model `{model}` does not exist.", "model")

    def _params(self, request: dict[str, Any], logprobs: bool) -> SamplingParams:
        d = self.defaults
        stop = request.get("stop")
        if stop is None:
            stops: tuple[str, ...] = ()
        elif isinstance(stop, str):
            stops = (stop,)
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            stops = tuple(stop)
        else:
            raise HTTPError(400, "stop must be a string or a list of strings", "stop")
        choices = request.get("guided_choice")
        structured = request.get("structured_outputs")
        if choices is None and isinstance(structured, dict):
            choices = structured.get("choice")
        if choices is not None and not (
            isinstance(choices, list) and all(isinstance(c, str) for c in choices)
        ):
            raise HTTPError(400, "guided_choice must be a list of strings", "guided_choice")
        try:
            max_tokens = request.get("max_tokens", request.get("max_completion_tokens"))
            params = SamplingParams(
                max_new_tokens=int(max_tokens) if max_tokens is not None else d.max_new_tokens,
                temperature=float(request.get("temperature", d.temperature)),
                top_p=float(request.get("top_p", d.top_p)),
                repetition_penalty=float(request.get("repetition_penalty", d.repetition_penalty)),
                stop=stops,
                seed=int(request["seed"]) if request.get("seed") is not None else None,
                logprobs=logprobs,
                choices=tuple(choices) if choices is not None else None,
            )
        except (TypeError, ValueError) as exc:
            raise HTTPError(400, f"bad sampling parameter: {exc}") from exc
        if int(request.get("n", 1) or 1) != 1:
            raise HTTPError(400, "only n=1 is supported", "n")
        if request.get("stream"):
            raise HTTPError(400, "streaming is not supported by this server", "stream")
        try:
            validate_params(params)
        except ModelError as exc:
            raise HTTPError(400, str(exc)) from exc
        return params

    def _token_strings(self, ids: list[int], as_ids: bool) -> list[str]:
        decode = getattr(self.backend, "decode_tokens", None)
        if as_ids or decode is None:
            return [f"token_id:{t}" for t in ids]
        return list(decode(ids))

    async def _completions(self, request: dict[str, Any]) -> dict[str, Any]:
        texts, token_prompts = _parse_prompt(request.get("prompt"))
        logprobs = request.get("logprobs") is not None and request.get("logprobs") is not False
        params = self._params(request, logprobs)
        as_ids = bool(request.get("return_tokens_as_token_ids"))
        return_ids = bool(request.get("return_token_ids"))
        prompt_logprobs = _prompt_logprobs_param(request.get("prompt_logprobs"))
        if prompt_logprobs is not None and not token_prompts:
            raise HTTPError(400, "prompt_logprobs needs a prompt of token ids on this server",
                            "prompt_logprobs")
        if prompt_logprobs is not None and getattr(self.backend, "score_tokens", None) is None:
            raise HTTPError(400, f"{self.model_name} cannot score prompts", "prompt_logprobs")
        results: list[Completion]
        if token_prompts:
            if not supports_tokens(self.backend):
                raise HTTPError(400, f"{self.model_name} takes no token-id prompts", "prompt")
            complete_tokens = self.backend.complete_tokens  # type: ignore[attr-defined]
            results = list(await asyncio.gather(*(complete_tokens(ids, params) for ids in token_prompts)))
        else:
            results = await self.backend.complete_batch(texts, params)
        choices = []
        for index, result in enumerate(results):
            prompt_ids = token_prompts[index] if token_prompts else None
            choice: dict[str, Any] = {  # vLLM's CompletionResponseChoice, in its field order
                "index": index,
                "text": result.text,
                "logprobs": None,
                "finish_reason": result.finish_reason,
                "stop_reason": result.stop,
                "token_ids": result.token_ids if return_ids else None,
                "prompt_logprobs": (
                    await self._prompt_logprobs(prompt_ids)
                    if prompt_logprobs is not None and prompt_ids else None
                ),
                "prompt_token_ids": prompt_ids if return_ids else None,
            }
            if logprobs and result.token_ids is not None and result.logprobs is not None:
                tokens = self._token_strings(result.token_ids, as_ids)
                values = [max(v, LOGPROB_FLOOR) for v in result.logprobs]
                offsets, at = [], 0
                for piece in tokens:  # vLLM advances by the length of what it shows, ids included
                    offsets.append(at)
                    at += len(piece)
                choice["logprobs"] = {
                    "text_offset": offsets,
                    "token_logprobs": values,
                    "tokens": tokens,
                    "top_logprobs": [{t: v} for t, v in zip(tokens, values, strict=True)],
                }
            choices.append(choice)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": _usage(results),
        }

    async def _prompt_logprobs(self, prompt_ids: list[int]) -> list[dict[str, Any] | None]:
        """vLLM's ``prompt_logprobs`` for a token-id prompt: null for the first token (it has no
        context), then ``{"<id>": {"logprob", "rank", "decoded_token"}}`` for each later one."""
        if len(prompt_ids) < 2:
            return [None]
        values = await self.backend.score_tokens(prompt_ids, 1)  # type: ignore[attr-defined]
        pieces = self._token_strings(prompt_ids, as_ids=False)
        scored: list[dict[str, Any] | None] = [None]
        for token, value, piece in zip(prompt_ids[1:], values, pieces[1:], strict=True):
            entry = {"logprob": max(float(value), LOGPROB_FLOOR), "rank": None, "decoded_token": piece}
            scored.append({str(token): entry})
        return scored

    async def _chat(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = _parse_messages(request.get("messages"))
        logprobs = bool(request.get("logprobs"))
        params = self._params(request, logprobs)
        as_ids = bool(request.get("return_tokens_as_token_ids"))
        result = await self.backend.chat(messages, params)
        lp: dict[str, Any] | None = None
        if logprobs and result.token_ids is not None and result.logprobs is not None:
            tokens = self._token_strings(result.token_ids, as_ids)
            lp = {
                "content": [
                    {"token": t, "logprob": v, "bytes": list(t.encode()), "top_logprobs": []}
                    for t, v in zip(tokens, result.logprobs, strict=True)
                ]
            }
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "logprobs": lp,
                    "finish_reason": result.finish_reason,
                    "stop_reason": result.stop,
                }
            ],
            "usage": _usage([result]),
        }


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HTTPError(400, "request body must be a JSON object")
    return data


def _parse_messages(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise HTTPError(400, "messages must be a non-empty list", "messages")
    messages = []
    for item in raw:
        if not isinstance(item, dict) or item.get("role") not in ("system", "user", "assistant"):
            raise HTTPError(400, "each message needs a role of system, user or assistant", "messages")
        content = item.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        if not isinstance(content, str):
            raise HTTPError(400, "message content must be text", "messages")
        messages.append(ChatMessage(role=item["role"], content=content))
    return messages


def _usage(results: list[Completion]) -> dict[str, Any]:
    """vLLM's ``UsageInfo``, in its field order."""
    prompt = sum(r.usage.prompt_tokens for r in results)
    completion = sum(r.usage.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
            "prompt_tokens_details": None}


def _is_token_ids(values: list[Any]) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in values)


def _parse_prompt(prompt: Any) -> tuple[list[str], list[list[int]]]:
    """Text prompts or token-id prompts (exactly one list is non-empty), as vLLM's
    ``CompletionRequest.prompt`` takes them: str | list[str] | list[int] | list[list[int]]."""
    if isinstance(prompt, str):
        return [prompt], []
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt), []
        if _is_token_ids(prompt):
            return [], [list(prompt)]
        if all(isinstance(p, list) and p and _is_token_ids(p) for p in prompt):
            return [], [list(p) for p in prompt]
    raise HTTPError(400, "prompt must be a string, a non-empty list of strings, a list of token ids "
                    "(integers >= 0) or a list of such lists", "prompt")


def _prompt_logprobs_param(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (value < 0 and value != -1):
        raise HTTPError(400, "`prompt_logprobs` must be a positive value or -1.", "prompt_logprobs")
    return value


class ServerThread:
    """A ``JSONServer`` (a ``ModelServer``, a test double) on its own event loop in a daemon thread
    (tests, and embedding in sync code)."""

    def __init__(self, server: JSONServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self.host = host
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fathom-model-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.server.port}/v1"

    def start(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(self.host, self._port), self._loop).result(
            timeout=30
        )
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
