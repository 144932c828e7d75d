"""The one place that builds model backends from settings.

Roles that name the same model on the same device share one instance: in local mode all four roles
default to the bundled model, which is then loaded once, and their requests batch together.
"""

from __future__ import annotations

import threading
from typing import Literal

from fathom.core.config import ModelRole, Settings, get_settings
from fathom.core.errors import ConfigError
from fathom.models.base import ModelBackend, SamplingParams
from fathom.models.bundled import resolve_model

RoleName = Literal["policy", "synthesizer", "extractor", "judge"]
ROLES: tuple[RoleName, ...] = ("policy", "synthesizer", "extractor", "judge")

_cache: dict[tuple[object, ...], ModelBackend] = {}
_lock = threading.Lock()


def role_settings(role: str, settings: Settings) -> ModelRole:
    if role not in ROLES:
        raise ConfigError(f"unknown model role {role!r}; expected one of {', '.join(ROLES)}")
    cfg: ModelRole = getattr(settings, role)
    return cfg


def default_params(role: str, settings: Settings | None = None, **overrides: object) -> SamplingParams:
    """Sampling settings a role is configured with (FATHOM.md: policy 0.6 / rep. penalty 1.05, ...)."""
    cfg = role_settings(role, settings or get_settings())
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty,
    )
    if overrides:
        from dataclasses import replace

        params = replace(params, **overrides)  # type: ignore[arg-type]
    return params


def _key(cfg: ModelRole, settings: Settings) -> tuple[object, ...]:
    if cfg.backend == "transformers":
        return ("transformers", resolve_model(cfg.model, settings), cfg.device, cfg.dtype)
    key = cfg.api_key.get_secret_value() if cfg.api_key else None
    return ("openai", cfg.base_url, cfg.model, cfg.api, key, cfg.timeout_s, cfg.max_retries, cfg.concurrency)


def build_backend(role: str, settings: Settings | None = None) -> ModelBackend:
    """The backend for a role, shared with any other role that names the same model."""
    settings = settings or get_settings()
    cfg = role_settings(role, settings)
    with _lock:
        key = _key(cfg, settings)
        backend = _cache.get(key)
        if backend is None:
            backend = _build(cfg, settings)
            _cache[key] = backend
        return backend


def _build(cfg: ModelRole, settings: Settings) -> ModelBackend:
    if cfg.backend == "transformers":
        from fathom.models.transformers_backend import TransformersBackend

        return TransformersBackend(
            resolve_model(cfg.model, settings), device=cfg.device, dtype=cfg.dtype, name=cfg.model
        )
    from fathom.models.openai_backend import OpenAIBackend

    return OpenAIBackend(cfg, name=cfg.model)


async def close_backends() -> None:
    """Close every cached backend (end of process, or between tests)."""
    with _lock:
        backends = list(_cache.values())
        _cache.clear()
    for backend in backends:
        await backend.aclose()
