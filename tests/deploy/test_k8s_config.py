"""The Kubernetes manifests parse, and the ConfigMap really configures `Settings` as intended."""

from __future__ import annotations

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
