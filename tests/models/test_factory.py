from __future__ import annotations

import json
from pathlib import Path

import pytest
from fathom.core.config import ModelRole, Settings
from fathom.core.errors import ConfigError
from fathom.models.factory import build_backend, close_backends, default_params
from fathom.models.openai_backend import OpenAIBackend
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
