"""The Kubernetes manifests parse, and the ConfigMap really configures `Settings` as intended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fathom.core.config import Settings

K8S = Path(__file__).resolve().parents[2] / "k8s"


def _docs() -> list[dict]:
    docs = []
    for f in sorted(K8S.rglob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def test_manifests_parse_and_kustomization_lists_existing_files() -> None:
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / "base" / res).exists(), res
    kinds = {d["kind"] for d in _docs()}
    assert {"Deployment", "Service", "ConfigMap", "Job"} <= kinds


def test_configmap_drives_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    cm = next(d for d in _docs() if d["kind"] == "ConfigMap")
    for key, value in cm["data"].items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.policy.backend == "openai" and s.policy.base_url == "http://vllm-policy:8000/v1"
    assert s.policy.model == "FractalAIResearch/Fathom-Search-4B" and s.policy.context_tokens == 40_960
    assert s.synthesizer.context_tokens == 131_072 and s.synthesizer.temperature == 0.4
    assert s.search.backend == "serper"
    # No secret travels in the ConfigMap.
    assert not any("KEY" in k or "PASSWORD" in k or "DATABASE_URL" in k for k in cm["data"])


# Qwen3-4B's config.json declares 40,960 positions (its docs call 32,768 native); both Fathom models
# are Qwen3-4B fine-tunes, so a window past 40,960 is served only through rope scaling.
QWEN3_4B_CONFIG_POSITIONS = 40_960


def _vllm_args() -> dict[str, list[str]]:
    """Container args of every Deployment that runs vLLM's OpenAI server, by Deployment name."""
    found: dict[str, list[str]] = {}
    for doc in _docs():
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if "vllm" in container["image"]:
                found[doc["metadata"]["name"]] = [str(a) for a in container.get("args", [])]
    return found


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _rope_scaling(args: list[str]) -> dict | None:
    given = _flag(args, "--rope-scaling")
    if given is not None:
        return dict(json.loads(given))
    overrides = _flag(args, "--hf-overrides")
    return dict(json.loads(overrides)).get("rope_scaling") if overrides else None


def test_every_vllm_server_covers_its_context_window() -> None:
    servers = _vllm_args()
    assert {"vllm-policy", "vllm-synthesizer"} <= set(servers)
    for name, args in servers.items():
        window = _flag(args, "--max-model-len")
        assert window is not None, f"{name}: no --max-model-len"
        rope = _rope_scaling(args)
        if rope is None:
            assert int(window) <= QWEN3_4B_CONFIG_POSITIONS, f"{name}: {window} tokens need rope scaling"
            continue
        assert rope["rope_type"] == "yarn", name
        covered = float(rope["factor"]) * int(rope["original_max_position_embeddings"])
        assert covered >= int(window), f"{name}: YaRN covers {covered:.0f} tokens, the window is {window}"


def test_synthesizer_uses_qwen3_yarn_settings() -> None:
    args = _vllm_args()["vllm-synthesizer"]
    assert _flag(args, "--max-model-len") == "131072"
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert _rope_scaling(args) == yarn  # Qwen3's own long-context recipe
