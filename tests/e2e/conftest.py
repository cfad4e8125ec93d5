"""e2e tier: a real cluster, from a kubeconfig or a kind cluster. Opt-in with GEMMA_E2E=1.

Where the cluster comes from, first match wins:

* ``GEMMA_E2E_KUBECONFIG`` (or ``KUBECONFIG``): an existing cluster; its current context is used.
* ``kind`` and ``docker`` on PATH with a reachable Docker daemon: a kind cluster named
  ``GEMMA_E2E_KIND_CLUSTER`` (default ``gemma-e2e``) is created if missing, and deleted at the
  end unless it existed before or ``GEMMA_E2E_KEEP=1``.

Otherwise every e2e test is skipped with the reason. The fixtures match the integration tier:
``kube_api`` (``.kind`` is "kubeconfig" or "kind"; ``.requests`` is None), ``kube``,
``namespace`` and ``run_operator`` (kopf in a thread, with the kubeconfig's credentials).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from kubeapi.cluster import KubeAPI  # noqa: E402
from kubeapi.operator import operators  # noqa: E402


def _docker_reachable() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_cluster() -> tuple[str | None, str]:
    """("kubeconfig" | "kind", "") or (None, the reason to skip)."""
    if os.environ.get("GEMMA_E2E") != "1":
        return None, "e2e tier is opt-in: set GEMMA_E2E=1 (with a kubeconfig, or kind and docker)"
    kubeconfig = os.environ.get("GEMMA_E2E_KUBECONFIG") or os.environ.get("KUBECONFIG")
    if kubeconfig:
        if not pathlib.Path(kubeconfig).is_file():
            return None, f"e2e tier: kubeconfig {kubeconfig} does not exist"
        return "kubeconfig", ""
    if not shutil.which("kind"):
        return None, "e2e tier: no kubeconfig given and `kind` is not on PATH"
    if not shutil.which("docker"):
        return None, "e2e tier: no kubeconfig given and `docker` is not on PATH"
    if not _docker_reachable():
        return None, "e2e tier: no kubeconfig given and the Docker daemon is not reachable"
    return "kind", ""


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory):
    source, reason = find_cluster()
    if source is None:
        pytest.skip(reason)
    if source == "kubeconfig":
        path = pathlib.Path(os.environ.get("GEMMA_E2E_KUBECONFIG") or os.environ["KUBECONFIG"])
        api = KubeAPI.from_kubeconfig(path, kind="kubeconfig")
        try:
            api.apply_crds()
            yield api
        finally:
            api.close()
        return

    name = os.environ.get("GEMMA_E2E_KIND_CLUSTER", "gemma-e2e")
    existing = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True,
                              check=True).stdout.split()
    created = name not in existing
    if created:
        subprocess.run(["kind", "create", "cluster", "--name", name, "--wait", "120s"], check=True)
    path = tmp_path_factory.mktemp("kind") / "kubeconfig"
    path.write_text(subprocess.run(["kind", "get", "kubeconfig", "--name", name], capture_output=True,
                                   text=True, check=True).stdout)
    api = KubeAPI.from_kubeconfig(path, kind="kind")
    try:
        api.apply_crds(timeout=60)
        yield api
    finally:
        api.close()
        if created and os.environ.get("GEMMA_E2E_KEEP") != "1":
            subprocess.run(["kind", "delete", "cluster", "--name", name], check=False)


@pytest.fixture
def run_operator(kube_api: KubeAPI, namespace: str):  # stops before the namespace is deleted
    with operators(kube_api) as start:
        yield start
