from __future__ import annotations

import json
from pathlib import Path

import pytest
from fathom.core.config import ModelRole, Settings
from fathom.core.errors import ConfigError
from fathom.models.factory import build_backend, close_backends, default_params
from fathom.models.openai_backend import OpenAIBackend
from fathom.models.server import HTTPError, ModelServer, ServerThread
from fathom.models.transformers_backend import TransformersBackend
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


async def test_roles_naming_the_same_model_share_one_instance(bundled_model_path: Path) -> None:
    settings = Settings(
        cache_dir=bundled_model_path.parent.parent,
        judge=ModelRole(backend="openai", model="judge-model", base_url="http://127.0.0.1:9/v1"),
    )
    try:
        policy = build_backend("policy", settings)
        assert isinstance(policy, TransformersBackend)
        assert policy.model_ref == str(bundled_model_path)
        assert build_backend("synthesizer", settings) is policy
        assert build_backend("extractor", settings) is policy
        judge = build_backend("judge", settings)
        assert isinstance(judge, OpenAIBackend) and judge is not policy
        assert build_backend("judge", settings) is judge
        with pytest.raises(ConfigError, match="unknown model role"):
            build_backend("critic", settings)
    finally:
        await close_backends()
    assert build_backend("policy", settings) is not policy  # the cache was emptied
    await close_backends()


def _openai_policy(base_url: str, **kw: object) -> Settings:
    return Settings(policy=ModelRole(backend="openai", model="smollm2", base_url=base_url, **kw))  # type: ignore[arg-type]


async def test_an_openai_policy_counts_its_budget_exactly_or_refuses_to_start(
    model_server: ServerThread, bundled_backend: TransformersBackend
) -> None:
    class WithoutTokenize(ModelServer):
        async def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
            if path.rstrip("/") == "/tokenize":
                raise HTTPError(404, f"no route {path}")
            return await super().dispatch(method, path, body)

    try:
        policy = build_backend("policy", _openai_policy(model_server.base_url))
        assert isinstance(policy, OpenAIBackend) and policy.token_counter() == "server"
        question = "Who first climbed K2?"
        assert policy.count_tokens(question) == bundled_backend.count_tokens(question)
        with ServerThread(WithoutTokenize(bundled_backend, model_name="smollm2")) as bare:
            with pytest.raises(ConfigError, match=r"agent's context budget.*/tokenize.*HTTP 404"):
                build_backend("policy", _openai_policy(bare.base_url))
            # the same server is fine for a role that tolerates estimates
            judge = build_backend("judge", Settings(judge=ModelRole(
                backend="openai", model="smollm2", base_url=bare.base_url)))
            assert isinstance(judge, OpenAIBackend) and judge.token_counter() == "estimate"
            await close_backends()  # before the server stops: no connection left open to it
    finally:
        await close_backends()


def test_a_chat_api_policy_is_refused() -> None:
    # The policy's prompt is raw ChatML: a chat endpoint would template it a second time.
    with pytest.raises(ConfigError, match=r"policy.*api='chat'.*completions"):
        build_backend("policy", _openai_policy("http://127.0.0.1:9/v1", api="chat"))


def test_default_params_follow_the_role_settings() -> None:
    settings = Settings()
    policy = default_params("policy", settings)
    assert (policy.temperature, policy.repetition_penalty, policy.max_new_tokens) == (0.6, 1.05, 8192)
    assert default_params("synthesizer", settings).temperature == 0.4
    assert default_params("judge", settings, logprobs=True).logprobs is True


def test_cli_list_and_prepare(bundled_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fathom.cli.models import app
    from fathom.core.config import get_settings

    monkeypatch.setenv("FATHOM_CACHE_DIR", str(bundled_model_path.parent.parent))
    monkeypatch.setenv("FATHOM_JUDGE__BACKEND", "openai")
    monkeypatch.setenv("FATHOM_JUDGE__BASE_URL", "http://vllm-judge:8000/v1")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        listed = runner.invoke(app, ["list", "--json"])
        assert listed.exit_code == 0, listed.output
        rows = {row["role"]: row for row in json.loads(listed.output)}
        assert set(rows) == {"policy", "synthesizer", "extractor", "judge"}
        assert rows["policy"]["prepared"] is True and rows["policy"]["path"] == str(bundled_model_path)
        assert rows["judge"]["endpoint"] == "http://vllm-judge:8000/v1" and rows["judge"]["prepared"] is None
        prepared = runner.invoke(app, ["prepare"])
        assert prepared.exit_code == 0 and "already prepared" in prepared.output
    finally:
        get_settings.cache_clear()
