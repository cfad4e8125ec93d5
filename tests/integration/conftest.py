"""Integration fixtures: kopf and handlers against a Kubernetes API server on loopback.

Every test that uses ``kube_api`` runs once per tier:

* ``emulator``: kmock's KubernetesEmulator with our subclass (kubeapi/emulator.py); always on.
* ``envtest``: real etcd + kube-apiserver (+ kube-controller-manager when present), started
  from KUBEBUILDER_ASSETS or TEST_ASSET_*; skipped with the reason when those are unset.

``GEMMA_KUBE_API=emulator`` or ``=envtest`` runs one tier only.

Fixtures:

* ``kube_api`` (session): a KubeAPI with ``.kind``, ``.server``, ``.kubeconfig``, ``.client``,
  ``.request(...)``, ``.watch(...)``, ``.wait_for(...)``, ``.requests`` / ``.writes`` (emulator
  counters by (verb, resource), or None; subtract two readings), ``.inject(...)`` (emulator faults),
  ``.emulator`` (or None), ``.controller_manager`` (GC and Deployment status are real).
* ``kube``: the official client's ApiClient for that server, e.g. ``AppsV1Api(kube)``.
* ``namespace``: a fresh namespace per test, deleted afterwards.
* ``create_nodes``: ``create_nodes(node_dicts)`` creates Nodes (status set through /status)
  and deletes them after the test; ``create_nodes.from_fixture("gke-l4")`` loads
  tests/fixtures/nodes/gke-l4.yaml.
* ``run_operator``: ``run_operator("gemma_operator.handlers")`` or ``run_operator(register_fn)``
  starts kopf cluster-wide in a thread with a fresh registry; stopped at teardown.
"""

from __future__ import annotations

import os
import pathlib
import sys
import threading

import kubernetes
import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from kubeapi.cluster import EmulatorThread, KubeAPI, write_kubeconfig  # noqa: E402
from kubeapi.envtest import EnvTest, find_assets  # noqa: E402
from kubeapi.operator import operators  # noqa: E402

NODES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "nodes"
TIERS = ("emulator", "envtest")


def _tiers() -> list:
    only = os.environ.get("GEMMA_KUBE_API")
    return [pytest.param(t, id=t) for t in TIERS if not only or t == only]


@pytest.fixture(scope="session", params=_tiers())
def kube_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp(request.param)
    if request.param == "emulator":
        thread = EmulatorThread().start()
        api = KubeAPI(kind="emulator", server=thread.url, emulator=thread.emulator,
                      kubeconfig=write_kubeconfig(workdir / "kubeconfig", thread.url))
        try:
            api.apply_crds()
            yield api
        finally:
            api.close()
            thread.stop()
        return
    assets, reason = find_assets()
    if assets is None:
        pytest.skip(reason)
    envtest = EnvTest(assets, workdir)
    try:
        # The CRDs go in before kube-controller-manager starts (see EnvTest.start).
        yield envtest.start(before_controllers=lambda api: api.apply_crds())
    finally:
        envtest.stop()


class NodeFactory:
    """Creates Nodes; with kube-controller-manager, also keeps their Leases renewed as kubelets
    would (every 5 s, in a thread), so the node lifecycle controller keeps them Ready."""

    def __init__(self, api: KubeAPI):
        self.api = api
        self.created: list[str] = []
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __call__(self, nodes: list[dict]) -> list[str]:
        names = [self.api.create_node(node) for node in nodes]
        self.created += names
        if self.api.controller_manager:
            for name in names:
                self.api.renew_node_lease(name)
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(target=self._beat, name="node-leases", daemon=True)
                self._heartbeat.start()
        return names

    def _beat(self) -> None:
        while not self._stop.wait(5):
            for name in list(self.created):
                try:
                    self.api.renew_node_lease(name)
                except kubernetes.client.ApiException as e:
                    if e.status != 404:  # deleted meanwhile
                        raise

    def from_fixture(self, name: str) -> list[str]:
        return self(yaml.safe_load((NODES / f"{name}.yaml").read_text())["items"])

    def delete(self, name: str) -> None:
        self.api.delete_node(name)
        if name in self.created:
            self.created.remove(name)

    def cleanup(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(10)
        for name in self.created:
            self.api.delete_node(name)
        self.created.clear()


@pytest.fixture
def create_nodes(kube_api: KubeAPI):
    """Nodes are cluster-scoped: they are removed after each test so tests don't see each other's."""
    factory = NodeFactory(kube_api)
    yield factory
    factory.cleanup()


@pytest.fixture
def run_operator(kube_api: KubeAPI, namespace: str, create_nodes: NodeFactory):
    """Start kopf with handlers; returns the OperatorThread (``.memo``, ``.registry``).

    It depends on ``namespace`` and ``create_nodes`` so that the operator stops before the
    test's namespace and nodes are deleted (teardown runs in reverse order of setup).
    """
    with operators(kube_api) as start:
        yield start
