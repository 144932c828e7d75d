"""Fixtures around the real bundled model (SmolLM2-135M-Instruct).

``bundled_model_path`` (session) the prepared model directory. It lives in the models directory of
                       the settings, so ``FATHOM_CACHE_DIR`` picks where; the conversion (~20-40 s)
                       happens once per cache, not once per session.
``bundled_backend``    (session) a ``TransformersBackend`` over it, named ``smollm2``. It is safe to
                       share across tests and event loops (its worker thread owns the model).
``model_server``       (session) a real ``ModelServer`` over ``bundled_backend`` on 127.0.0.1, in a
                       background thread; ``model_server.base_url`` ends in ``/v1``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fathom.core.config import Settings
from fathom.models.bundled import prepare_bundled
from fathom.models.server import ModelServer, ServerThread
from fathom.models.transformers_backend import TransformersBackend

MODEL_NAME = "smollm2"


@pytest.fixture(scope="session")
def bundled_model_path() -> Path:
    return prepare_bundled(Settings().models_dir)


@pytest.fixture(scope="session")
def bundled_backend(bundled_model_path: Path) -> Iterator[TransformersBackend]:
    backend = TransformersBackend(str(bundled_model_path), name=MODEL_NAME)
    backend.load()
    yield backend
    asyncio.run(backend.aclose())


@pytest.fixture(scope="session")
def model_server(bundled_backend: TransformersBackend) -> Iterator[ServerThread]:
    with ServerThread(ModelServer(bundled_backend, model_name=MODEL_NAME)) as running:
        yield running
