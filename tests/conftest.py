"""Fixtures for real parts: the local model server and the pinned codex binary."""

import os

import pytest

from codeswarm.codex_binary import find_codex
from codeswarm.model_server import ModelServer


@pytest.fixture(scope="session")
def codex_bin() -> str:
    try:
        return find_codex()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the pinned codex binary: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def model_server():
    with ModelServer() as server:
        yield server
