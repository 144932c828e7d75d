"""OpenAIBackend against a real OpenAI-compatible server (ours) running the real bundled model.

Failure injection (503s, 400s) uses the same server with ``dispatch`` overridden: the bodies are
OpenAI-format error JSON, sent over a real socket.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fathom.agent import protocol
from fathom.agent.loop import AgentLoop
from fathom.core.config import AgentSettings, ModelRole
from fathom.core.errors import ConfigError, ModelError
from fathom.models.base import ChatMessage, SamplingParams
from fathom.models.openai_backend import OpenAIBackend
from fathom.models.server import HTTPError, ModelServer, ServerThread
from fathom.models.transformers_backend import TransformersBackend
from fathom.tools.base import TOOL_SPECS, ToolResult
from pydantic import SecretStr

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0, repetition_penalty=1.0)


def role(base_url: str, **kw: Any) -> ModelRole:
    return ModelRole(backend="openai", model="smollm2", base_url=base_url, **kw)


class FlakyServer(ModelServer):
    """Answers the first ``failures`` requests with ``status`` (OpenAI error JSON), then serves normally."""

    def __init__(self, backend: TransformersBackend, failures: int, status: int, delay_s: float = 0.0):
        super().__init__(backend, model_name="smollm2")
        self.failures = failures
        self.status = status
        self.delay_s = delay_s
        self.seen = 0

    async def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        self.seen += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.seen <= self.failures:
            raise HTTPError(self.status, f"injected failure {self.seen}")
        return await super().dispatch(method, path, body)


class ToolsWithoutCalls:
    """A tool runner for a run that makes no calls (one short turn); any call is an error result."""

    specs = TOOL_SPECS

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        return ToolResult(text=f"Error: {name} is not available in this test", ok=False)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def flaky(bundled_backend: TransformersBackend, request: pytest.FixtureRequest) -> Iterator[FlakyServer]:
    failures, status, delay = request.param
    server = FlakyServer(bundled_backend, failures, status, delay)
    with ServerThread(server):
        yield server


async def test_completions_match_the_in_process_model(
    model_server: ServerThread, bundled_backend: TransformersBackend
) -> None:
    backend = OpenAIBackend(role(model_server.base_url))
    prompt = bundled_backend.render_chat([ChatMessage("user", "What is the capital of France?")])
    params = SamplingParams(max_new_tokens=6, temperature=0, repetition_penalty=1.0, logprobs=True)
    remote = await backend.complete(prompt, params)
    local = await bundled_backend.complete(prompt, params)
    assert remote.text == local.text and remote.finish_reason == local.finish_reason
    assert remote.token_ids == local.token_ids  # via vLLM-style "token_id:N" strings
    assert remote.logprobs == pytest.approx(local.logprobs, abs=1e-4)
    assert remote.usage == local.usage and remote.model == "smollm2"
    await backend.aclose()


async def test_stop_strings_and_choices_over_http(model_server: ServerThread) -> None:
    backend = OpenAIBackend(role(model_server.base_url))
    stopped = await backend.complete(
        "Count: 1, 2, 3,", SamplingParams(max_new_tokens=12, temperature=0, stop=(" 5",))
    )
    assert stopped.finish_reason == "stop" and stopped.stop == " 5" and " 5" not in stopped.text
    picked = await backend.complete(
        "The capital of France is", SamplingParams(choices=(" London", " Paris", " Banana"))
    )
    assert picked.text == " Paris"
    structured = OpenAIBackend(role(model_server.base_url), choice_field="structured_outputs")
    assert (
        await structured.complete("The capital of France is", SamplingParams(choices=(" Paris", " Rome")))
    ).text in (
        " Paris",
        " Rome",
    )
    await backend.aclose()
    await structured.aclose()


async def test_chat_api_with_logprobs(model_server: ServerThread) -> None:
    backend = OpenAIBackend(role(model_server.base_url, api="chat"))
    reply = await backend.chat(
        [ChatMessage("user", "Say hello.")], SamplingParams(max_new_tokens=5, temperature=0, logprobs=True)
    )
    assert reply.text.strip()
    assert reply.token_ids and reply.logprobs and len(reply.token_ids) == len(reply.logprobs)
    assert all(lp <= 0 for lp in reply.logprobs)
    await backend.aclose()


async def test_completions_api_renders_chat_itself(
    model_server: ServerThread, bundled_backend: TransformersBackend
) -> None:
    backend = OpenAIBackend(role(model_server.base_url))  # api="completions"
    messages = [ChatMessage("user", "Say hello.")]
    assert backend.render_chat(messages) == bundled_backend.render_chat(messages).replace(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
        "trained by Hugging Face<|im_end|>\n",
        "",
    )  # "smollm2" is no hub id, so plain ChatML (no SmolLM default system prompt)
    reply = await backend.chat(messages, GREEDY)
    assert reply.text
    await backend.aclose()


class NoTokenizeServer(ModelServer):
    """A server without vLLM's /tokenize (as OpenAI's API, or an older llama.cpp build)."""

    async def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path.rstrip("/") == "/tokenize":
            raise HTTPError(404, f"no route {path}")
        return await super().dispatch(method, path, body)


@pytest.fixture
def no_tokenize_server(bundled_backend: TransformersBackend) -> Iterator[ServerThread]:
    with ServerThread(NoTokenizeServer(bundled_backend, model_name="smollm2")) as running:
        yield running


async def test_without_a_local_tokenizer_tokens_are_counted_by_the_server(
    model_server: ServerThread, bundled_backend: TransformersBackend
) -> None:
    # "smollm2" names no tokenizer on disk: the count must come from the server, never chars/4.
    backend = OpenAIBackend(role(model_server.base_url))
    prompt = protocol.build_prompt("Who first climbed K2?")
    assert backend.count_tokens(prompt) == bundled_backend.count_tokens(prompt) != math.ceil(len(prompt) / 4)
    assert backend.token_counter() == "server"
    for text in ("abcdefgh", "", "Ünïcödé and emoji 🧗 at 8,611 m"):
        assert backend.count_tokens(text) == bundled_backend.count_tokens(text)
    served = model_server.server.stats.requests
    assert backend.count_tokens(prompt) == bundled_backend.count_tokens(prompt)
    assert model_server.server.stats.requests == served  # a text counted once is not sent again
    backend.require_exact_token_counts()  # satisfied: no error
    await backend.aclose()


async def test_the_agent_budget_is_counted_in_the_servers_tokens(
    model_server: ServerThread, bundled_backend: TransformersBackend
) -> None:
    backend = OpenAIBackend(role(model_server.base_url))
    settings = AgentSettings(max_turns=1, max_new_tokens_per_turn=8)
    loop = AgentLoop(backend, ToolsWithoutCalls(), settings, GREEDY)
    traj = await loop.run("Who first climbed K2?")
    assert traj.steps and traj.stop_reason in ("max_turns", "no_tool_call", "answered")
    context = protocol.rebuild_context(traj.prompt, traj.steps)
    assert traj.total_tokens == bundled_backend.count_tokens(context)
    assert traj.steps[0].prompt_tokens == bundled_backend.count_tokens(traj.prompt)
    await backend.aclose()


async def test_no_tokenizer_and_no_tokenize_endpoint(no_tokenize_server: ServerThread) -> None:
    backend = OpenAIBackend(role(no_tokenize_server.base_url))
    refused = r"cannot count the tokens of 'smollm2' exactly.*/tokenize.*HTTP 404"
    with pytest.raises(ConfigError, match=refused):
        backend.require_exact_token_counts("the policy's context budget")
    with pytest.raises(ConfigError, match="the policy's context budget"):
        backend.count_tokens("abcdefgh")  # once exact counts are required, never an estimate
    # A role that does not require exact counts gets the estimate, and is told so (logged once).
    lenient = OpenAIBackend(role(no_tokenize_server.base_url))
    assert lenient.count_tokens("abcdefgh") == 2 and lenient.token_counter() == "estimate"
    await backend.aclose()
    await lenient.aclose()


async def test_an_unreachable_server_defers_the_check_and_then_fails_loudly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nobody listens there
    backend = OpenAIBackend(role(f"http://127.0.0.1:{port}/v1", max_retries=1), backoff_s=0.01)
    backend.require_exact_token_counts()  # cannot tell yet: not a refusal to start
    with pytest.raises(ModelError, match=r"tokenize.*after 2 attempts: ConnectError"):
        backend.count_tokens("abcdefgh")
    await backend.aclose()


@pytest.mark.parametrize("flaky", [(2, 503, 0.0)], indirect=True)
async def test_retries_transient_errors(flaky: FlakyServer) -> None:
    backend = OpenAIBackend(role(f"http://127.0.0.1:{flaky.port}/v1", max_retries=3), backoff_s=0.01)
    reply = await backend.complete("Hello", GREEDY)
    assert reply.text and flaky.seen == 3
    assert flaky.stats.by_status == {503: 2, 200: 1}
    await backend.aclose()


@pytest.mark.parametrize("flaky", [(99, 503, 0.0)], indirect=True)
async def test_gives_up_after_max_retries(flaky: FlakyServer) -> None:
    backend = OpenAIBackend(role(f"http://127.0.0.1:{flaky.port}/v1", max_retries=2), backoff_s=0.01)
    with pytest.raises(ModelError, match=r"after 3 attempts.*injected failure 3"):
        await backend.complete("Hello", GREEDY)
    assert flaky.seen == 3
    await backend.aclose()


@pytest.mark.parametrize("flaky", [(99, 400, 0.0), (99, 401, 0.0)], indirect=True)
async def test_client_errors_are_not_retried(flaky: FlakyServer) -> None:
    backend = OpenAIBackend(role(f"http://127.0.0.1:{flaky.port}/v1", max_retries=3), backoff_s=0.01)
    with pytest.raises(ModelError, match=rf"HTTP {flaky.status} .*injected failure 1"):
        await backend.complete("Hello", GREEDY)
    assert flaky.seen == 1
    await backend.aclose()


async def test_unknown_model_is_a_404_not_retried(model_server: ServerThread) -> None:
    backend = OpenAIBackend(
        ModelRole(backend="openai", model="no-such-model", base_url=model_server.base_url)
    )
    before = model_server.server.stats.by_status.get(404, 0)
    with pytest.raises(ModelError, match=r"HTTP 404.*no-such-model"):
        await backend.complete("Hello", GREEDY)
    assert model_server.server.stats.by_status[404] == before + 1
    await backend.aclose()


async def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nobody listens there
    backend = OpenAIBackend(role(f"http://127.0.0.1:{port}/v1", max_retries=2), backoff_s=0.01)
    with pytest.raises(ModelError, match="after 3 attempts: ConnectError"):
        await backend.complete("Hello", GREEDY)
    await backend.aclose()


@pytest.mark.parametrize("flaky", [(0, 200, 0.3)], indirect=True)
async def test_concurrency_limit(flaky: FlakyServer) -> None:
    url = f"http://127.0.0.1:{flaky.port}/v1"
    params = SamplingParams(max_new_tokens=1, temperature=0)
    limited = OpenAIBackend(role(url, concurrency=2))
    await limited.complete_batch([f"Prompt {i}" for i in range(6)], params)
    assert flaky.stats.max_in_flight == 2
    await limited.aclose()
    flaky.stats.max_in_flight = 0
    wide = OpenAIBackend(role(url, concurrency=6))
    await wide.complete_batch([f"Prompt {i}" for i in range(6)], params)
    assert flaky.stats.max_in_flight > 2  # the limit above was the client's doing
    await wide.aclose()


def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = OpenAIBackend(role("http://127.0.0.1:9/v1", api_key=SecretStr("sk-secret-123")))
    assert "sk-secret" not in repr(backend)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    from_env = OpenAIBackend(role("http://127.0.0.1:9/v1"))
    assert from_env._api_key == "sk-from-env"
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIBackend(ModelRole(backend="openai", model="x"))


async def test_bearer_header_reaches_the_server(model_server: ServerThread) -> None:
    # The server ignores auth, but a real request with the header must go through unchanged.
    backend = OpenAIBackend(role(model_server.base_url, api_key=SecretStr("sk-local")))
    assert (
        await backend.complete("Hi", SamplingParams(max_new_tokens=1, temperature=0))
    ).usage.completion_tokens == 1
    await backend.aclose()


async def test_vllm_extensions_are_off_for_api_openai_com() -> None:
    backend = OpenAIBackend(role("https://api.openai.com/v1"))
    body = backend._sampling_body(SamplingParams(repetition_penalty=1.05, logprobs=True, choices=("a", "b")))
    assert not {"repetition_penalty", "return_tokens_as_token_ids", "guided_choice"} & body.keys()
    local = OpenAIBackend(role("http://vllm:8000/v1"))
    body = local._sampling_body(SamplingParams(repetition_penalty=1.05, logprobs=True, choices=("a", "b")))
    assert body["repetition_penalty"] == 1.05 and body["guided_choice"] == ["a", "b"]


async def test_models_endpoint_lists_the_served_model(model_server: ServerThread) -> None:
    async with httpx.AsyncClient() as client:
        data = (await client.get(f"{model_server.base_url}/models")).json()
    assert [m["id"] for m in data["data"]] == ["smollm2"]
