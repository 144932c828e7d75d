"""The ``docker`` marker: tests that build images and run the compose stack (FATHOM_TEST_DOCKER=1)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: builds the images and runs the compose stack (only with FATHOM_TEST_DOCKER=1)"
    )
