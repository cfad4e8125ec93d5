"""Fixtures for the data-plane tests: real llama-server and vLLM builds, tiny Gemma checkpoints,
a Hugging Face Hub on loopback, and ONE vLLM server per session (it takes about a minute to start).

A cold cache builds (scripts/llama_server.sh, scripts/vllm_venv.sh); nothing here skips.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import pytest

from tests.dataplane import hub, servers, tinygemma, tinygemma_hf

# The vLLM plan the data plane serves: Gemma 3 1B on the L4 fixture (vLLM, bf16, one GPU).
VLLM_FIXTURE = "gke-l4"
VLLM_SPEC: dict[str, Any] = {"model": {"family": "gemma3", "size": "1b"}}
VLLM_START_TIMEOUT_S = 600.0


@pytest.fixture(scope="session")
def llama_server_bin() -> pathlib.Path:
    return servers.llama_server_binary()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tinygemma.write(tmp_path_factory.mktemp("model") / "tiny-gemma-3.gguf")


@pytest.fixture(scope="session")
def vllm_python() -> pathlib.Path:
    return servers.vllm_python()


@pytest.fixture(scope="session")
def tiny_hf(vllm_python: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The tiny Gemma 3 checkpoint in Hugging Face format (a directory)."""
    return tinygemma_hf.write(tmp_path_factory.mktemp("hf") / "tiny-gemma-3", vllm_python)


@dataclass
class VllmRun:
    """The session's vLLM server, started from the rendered command line for VLLM_FIXTURE/VLLM_SPEC."""

    server: servers.LlamaServer
    hub: hub.LoopbackHub
    repo: hub.HubRepo
    container: dict[str, Any]
    plan: Any
    env: dict[str, str]
    cache: pathlib.Path
    scratch: pathlib.Path
    seconds_to_healthy: float


@pytest.fixture(scope="session")
def vllm_run(vllm_python, tiny_hf, tmp_path_factory) -> VllmRun:
    _, plan = servers.planned(VLLM_FIXTURE, VLLM_SPEC)
    assert plan.runtime == "vllm", plan
    container = servers.rendered_container(VLLM_FIXTURE, VLLM_SPEC)
    repo = hub.HubRepo.from_dir(plan.model_id, tiny_hf)
    scratch = tmp_path_factory.mktemp("vllm")
    rendered_env = servers.local_env(container, scratch)
    port = servers.free_port()
    with hub.LoopbackHub([repo]) as loopback:
        srv = servers.vllm_server(vllm_python, container, port, scratch / "vllm.log", rendered_env, loopback.endpoint)
        try:
            seconds = srv.start(timeout_s=VLLM_START_TIMEOUT_S)
            yield VllmRun(srv, loopback, repo, container, plan, srv.env, servers.cache_path(container, scratch),
                          scratch, seconds)  # fmt: skip
        finally:
            srv.stop()
