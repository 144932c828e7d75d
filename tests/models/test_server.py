"""The OpenAI-compatible server's HTTP surface: shapes of answers and of errors, over a real socket."""

from __future__ import annotations

import httpx
import pytest
from fathom.models.server import ServerThread
from fathom.models.transformers_backend import TransformersBackend

pytestmark = pytest.mark.slow


def test_batch_prompt_list_returns_one_choice_each(model_server: ServerThread) -> None:
    body = {
        "model": "smollm2",
        "prompt": ["The sky is", "1, 2, 3,"],
        "max_tokens": 3,
        "temperature": 0,
        "logprobs": 1,
    }
    data = httpx.post(f"{model_server.base_url}/completions", json=body, timeout=120).json()
    assert data["object"] == "text_completion"
    assert [c["index"] for c in data["choices"]] == [0, 1]
    for choice in data["choices"]:
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == 3
        assert "".join(lp["tokens"]) == choice["text"]  # text pieces, not ids, when not asked for ids
    assert data["usage"]["completion_tokens"] == 6
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + 6


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/completions", b"{not json", 400, "not valid JSON"),
        ("/completions", b'{"prompt": 5}', 400, "prompt"),
        ("/completions", b'{"prompt": "x", "stream": true}', 400, "streaming"),
        ("/completions", b'{"prompt": "x", "temperature": -2}', 400, "temperature"),
        ("/completions", b'{"prompt": "x", "model": "gpt-4"}', 404, "gpt-4"),
        ("/chat/completions", b'{"messages": [{"role": "tool", "content": "x"}]}', 400, "role"),
        ("/nowhere", b"{}", 404, "no route"),
    ],
)
def test_errors_are_openai_shaped(
    model_server: ServerThread, path: str, body: bytes, status: int, needle: str
) -> None:
    response = httpx.post(f"{model_server.base_url}{path}", content=body, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"] and error["code"] == status and error["type"]


def test_health_and_keep_alive(model_server: ServerThread) -> None:
    with httpx.Client(base_url=model_server.base_url.removesuffix("/v1")) as client:
        for _ in range(3):  # several requests on one kept-alive connection
            assert client.get("/health").json() == {"status": "ok"}


def test_tokenize_counts_like_vllm(model_server: ServerThread, bundled_backend: TransformersBackend) -> None:
    root = model_server.base_url.removesuffix("/v1")  # vLLM serves /tokenize at the root
    prompt = "<|im_start|>user\nWho first climbed K2?<|im_end|>\n<|im_start|>assistant\n<think>"
    body = {"model": "smollm2", "prompt": prompt, "add_special_tokens": False}
    data = httpx.post(f"{root}/tokenize", json=body, timeout=30).json()
    assert data["count"] == bundled_backend.count_tokens(prompt) == len(data["tokens"])
    assert data["tokens"] == bundled_backend.tokenizer(prompt, add_special_tokens=False).input_ids
    assert data["max_model_len"] == bundled_backend.context_tokens


@pytest.mark.parametrize(
    ("method", "body", "status", "needle"),
    [
        ("POST", {"prompt": 5}, 400, "prompt must be a string"),
        ("POST", {"messages": [{"role": "user", "content": "hi"}]}, 400, "prompt must be a string"),
        ("POST", {"prompt": "x", "add_special_tokens": "no"}, 400, "add_special_tokens"),
        ("POST", {"prompt": "x", "model": "gpt-4"}, 404, "gpt-4"),
        ("GET", None, 405, "not allowed"),
    ],
)
def test_tokenize_errors(
    model_server: ServerThread, method: str, body: object, status: int, needle: str
) -> None:
    root = model_server.base_url.removesuffix("/v1")
    response = httpx.request(method, f"{root}/tokenize", json=body, timeout=30)
    assert response.status_code == status and needle in response.json()["error"]["message"]
