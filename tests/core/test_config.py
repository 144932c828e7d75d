"""One settings object: environment names, role defaults, secrets."""

from __future__ import annotations

import pytest
from fathom.core.config import BUNDLED_MODEL, Settings


def test_roles_have_the_originals_defaults() -> None:
    s = Settings()
    assert s.policy.model == BUNDLED_MODEL and s.policy.max_new_tokens == 8_192
    assert s.policy.temperature == 0.6 and s.policy.repetition_penalty == 1.05
    assert s.synthesizer.context_tokens == 131_072 and s.synthesizer.temperature == 0.4
    assert s.synthesizer.max_new_tokens == 10_000
    assert s.extractor.temperature == 0.0 and s.extractor.max_new_tokens == 1024
    assert s.agent.max_turns == 64 and s.agent.max_context_tokens == 40_960
    assert s.extract.page_chars == 15_000


def test_a_role_set_partly_from_the_environment_keeps_its_other_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FATHOM_EXTRACTOR__BACKEND", "openai")
    monkeypatch.setenv("FATHOM_EXTRACTOR__BASE_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("FATHOM_SYNTHESIZER__MODEL", "FractalAIResearch/Fathom-Synthesizer-4B")
    s = Settings()
    assert s.extractor.backend == "openai" and s.extractor.base_url == "http://vllm:8000/v1"
    assert s.extractor.temperature == 0.0 and s.extractor.max_new_tokens == 1024
    assert s.synthesizer.context_tokens == 131_072 and s.synthesizer.temperature == 0.4


def test_secrets_come_from_the_environment_and_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FATHOM_SERPER_API_KEY", "sk-serper-123")
    monkeypatch.setenv("FATHOM_POLICY__API_KEY", "sk-policy-456")
    s = Settings()
    assert s.serper_api_key is not None and s.serper_api_key.get_secret_value() == "sk-serper-123"
    dumped = repr(s) + s.model_dump_json()
    assert "sk-serper-123" not in dumped and "sk-policy-456" not in dumped


def test_database_defaults_to_sqlite_in_the_data_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'fathom.db'}"
    assert Settings(database_url="postgresql://db/fathom").resolved_database_url == "postgresql://db/fathom"


def test_the_extractor_budget_is_derived_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from fathom.core.config import WEAK_EXTRACTOR_TOKENS, ExtractorRole, ModelRole, extractor_budget

    # The bundled model with no budget of its own gets the small one; the configured value stays.
    s = Settings()
    assert s.extractor_budget == WEAK_EXTRACTOR_TOKENS and s.extractor.max_new_tokens == 1024
    # A budget set for it, in code or from the environment, is kept as set.
    assert extractor_budget(ModelRole(model=BUNDLED_MODEL, max_new_tokens=1024)) == 1024
    assert Settings(extractor=ExtractorRole(max_new_tokens=256)).extractor_budget == 256
    monkeypatch.setenv("FATHOM_EXTRACTOR__MAX_NEW_TOKENS", "300")
    assert Settings().extractor_budget == 300
    # Any other model keeps the original's 1,024.
    monkeypatch.delenv("FATHOM_EXTRACTOR__MAX_NEW_TOKENS")
    monkeypatch.setenv("FATHOM_EXTRACTOR__BACKEND", "openai")
    assert Settings().extractor_budget == 1024
    monkeypatch.setenv("FATHOM_EXTRACTOR__BACKEND", "transformers")
    monkeypatch.setenv("FATHOM_EXTRACTOR__MODEL", "Qwen/Qwen3-4B")
    assert Settings().extractor_budget == 1024


def test_extract_settings_follow_the_original_by_default() -> None:
    e = Settings().extract
    assert (e.page_chars, e.attempts, e.fallback_tokens) == (15_000, 3, 6_000)
    assert e.retry_temperature is None  # retries at the role's temperature: 0, as in the original
