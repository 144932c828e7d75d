"""The one place that builds model backends from settings.

Roles that name the same model on the same device share one instance: in local mode all four roles
default to the bundled model, which is then loaded once, and their requests batch together.

The policy over an OpenAI-compatible server must use raw completions and count its tokens exactly
(see ``check_policy``); a configuration that cannot is refused here, before any work starts.
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
    if cfg.backend == "replay":
        return ("replay", cfg.model, cfg.latency_s, settings.web.origin)
    if cfg.backend == "transformers":
        return ("transformers", resolve_model(cfg.model, settings), cfg.device, cfg.dtype)
    key = cfg.api_key.get_secret_value() if cfg.api_key else None
    return ("openai", cfg.base_url, cfg.model, cfg.api, key, cfg.timeout_s, cfg.max_retries, cfg.concurrency)


def build_backend(role: str, settings: Settings | None = None) -> ModelBackend:
    """The backend for a role, shared with any other role that names the same model."""
    settings = settings or get_settings()
    cfg = role_settings(role, settings)
    _refuse_chat_policy(role, cfg)
    with _lock:
        key = _key(cfg, settings)
        backend = _cache.get(key)
        if backend is None:
            backend = _build(cfg, settings)
            if role == "policy":
                check_policy(backend)  # a refused backend is not kept
            _cache[key] = backend
        elif role == "policy":
            check_policy(backend)
        return backend


def _refuse_chat_policy(role: str, cfg: ModelRole) -> None:
    if role == "policy" and cfg.backend == "openai" and cfg.api == "chat":
        raise ConfigError(
            "the policy cannot use api='chat': its prompt is raw ChatML text already (assistant turn "
            "opened inside <think>), which a chat endpoint would wrap in a second chat template, and "
            "Qwen3's template would also drop the past thinking the protocol keeps. Use "
            "FATHOM_POLICY__API=completions (vLLM and SGLang serve /v1/completions)"
        )


def new_backend(role: str, settings: Settings) -> ModelBackend:
    """A backend for a role that is NOT shared: the caller owns it and closes it (a service process
    that builds its model once and closes it on stop). Same checks as ``build_backend``."""
    cfg = role_settings(role, settings)
    _refuse_chat_policy(role, cfg)
    backend = _build(cfg, settings)
    if role == "policy":
        check_policy(backend)
    return backend


def check_policy(backend: ModelBackend) -> None:
    """The agent's context budget (40,960 tokens for Fathom-Search-4B) is counted in the policy's
    own tokens: a remote policy must count with its tokenizer or the server, never by estimate."""
    from fathom.models.openai_backend import OpenAIBackend

    if isinstance(backend, OpenAIBackend):
        backend.require_exact_token_counts("the agent's context budget needs exact counts")


def _build(cfg: ModelRole, settings: Settings) -> ModelBackend:
    if cfg.backend == "replay":
        from fathom.models.replay import ReplayBackend

        return ReplayBackend.from_role(cfg, settings)
    if cfg.backend == "transformers":
        from fathom.models.transformers_backend import TransformersBackend

        return TransformersBackend(
            resolve_model(cfg.model, settings), device=cfg.device, dtype=cfg.dtype, name=cfg.model
        )
    # An OpenAI-compatible server; VLLMBackend adds vLLM's token path (ids in, sampled ids and
    # log-probs out, prompt_logprobs scoring) and is a plain OpenAIBackend for every other call.
    from fathom.models.vllm_backend import VLLMBackend

    return VLLMBackend(cfg, name=cfg.model)


async def close_backends() -> None:
    """Close every cached backend (end of process, or between tests)."""
    with _lock:
        backends = list(_cache.values())
        _cache.clear()
    for backend in backends:
        await backend.aclose()
