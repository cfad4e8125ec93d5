"""Fixtures for the data-plane tests: a real llama-server build and a tiny Gemma GGUF.

A cold cache builds (scripts/llama_server.sh, scripts/vllm_venv.sh); nothing here skips.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.dataplane import servers, tinygemma


@pytest.fixture(scope="session")
def llama_server_bin() -> pathlib.Path:
    return servers.llama_server_binary()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tinygemma.write(tmp_path_factory.mktemp("model") / "tiny-gemma-3.gguf")


@pytest.fixture(scope="session")
def vllm_python() -> pathlib.Path:
    return servers.vllm_python()
