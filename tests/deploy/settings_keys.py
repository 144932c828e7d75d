"""FATHOM_* environment keys against the real settings: shared by the compose and Kubernetes checks."""

from __future__ import annotations

import os

import pytest
from fathom.core.config import Settings


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a process with exactly these FATHOM_* variables builds (real env parsing)."""
    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith("FATHOM_")]:
            m.delenv(key)
        for key, value in env.items():
            if key.startswith("FATHOM_"):
                m.setenv(key, value)
        return Settings()


def setting_exists(key: str) -> bool:
    """FATHOM_POLICY__BASE_URL -> Settings.policy.base_url exists (nested groups by `__`)."""
    from pydantic import BaseModel

    if not key.startswith("FATHOM_"):
        return False
    model: type[BaseModel] = Settings
    parts = key[len("FATHOM_"):].lower().split("__")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return False
        annotation = info.annotation
        is_group = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if i < len(parts) - 1:
            if not is_group:
                return False
            model = annotation  # type: ignore[assignment]
        elif is_group:  # FATHOM_PLANE names a group, not a setting
            return False
    return True
