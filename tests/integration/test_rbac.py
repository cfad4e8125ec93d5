"""The chart's RBAC is exactly what the operator uses: derived from the requests it really sends.

For each chart scenario (charts/gemma-operator/ci/*-values.yaml) the test renders the chart,
starts `gemma-operator run` with the rendered container's arguments against the emulator, drives
a whole lifecycle (plan, a pod waiting for a node, serve, scale, Ready, a missing Secret, a chat template
from a ConfigMap, NoFit, delete), and
records every
request the operator sent (by its User-Agent: kopf's own, and the operator's client). Then:

* every request is allowed by the rendered Roles/ClusterRoles bound to the operator's account;
* every (apiGroup, resource, verb) the chart grants was used by some request, except the grants
  in ADMISSION_ONLY, which admission checks on a request for a different resource; the chart
  must grant those too.

The request log is the emulator's; on a real API server the same check would read the audit log.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import kubernetes
import pytest

from gemma_operator import capacity, handlers, metrics
from gemma_operator.decide import DIGEST
from tests.chart.chart_files import CI_VALUES, NAMESPACE
from tests.chart.conftest import helm, render  # noqa: F401  (fixtures)
from tests.conftest import ROOT
from tests.integration.test_operator import Cluster, condition
from tests.integration.test_pods import model_pod, scheduled, stamp, write_pod_status

pytestmark = pytest.mark.integration

OPERATOR_AGENTS = ("kopf/", "gemma-operator")
Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# The one deliberate exception to "exactly the requests sent": no request uses it, so the
# request log cannot show it. The children's owner references set blockOwnerDeletion: true,
# and the OwnerReferencesPermissionEnforcement admission plugin (on in OpenShift and some
# hardened clusters) then refuses to create a child (403) unless its sender may update the
# owner's finalizers.
ADMISSION_ONLY: dict[Grant, str] = {
    ("gemma.dev", "gemmadeployments/finalizers", "update"):
        "OwnerReferencesPermissionEnforcement: blockOwnerDeletion on the children's owner references",
    # RBAC's escalation check on the endpoint picker's Role and RoleBinding (spec.gateway): the
    # operator may grant only what it holds (list on InferencePools is sent: the resync lists them).
    ("", "pods", "get"): "RBAC escalation check: the endpoint picker's Role reads pods",
    ("inference.networking.k8s.io", "inferencepools", "get"): "RBAC escalation check: the picker's Role",
    ("inference.networking.k8s.io", "inferencepools", "watch"): "RBAC escalation check: the picker's Role",
    **{("inference.networking.x-k8s.io", resource, verb): "RBAC escalation check: the picker's Role"
       for resource in ("inferenceobjectives", "inferencemodelrewrites") for verb in ("get", "list", "watch")},
}


@pytest.fixture
def emulator(kube_api):
    if kube_api.emulator is None:
        pytest.skip("the request log is the emulator's (a real server would need its audit log)")
    return kube_api


def rbac_verbs(request: Any) -> set[str]:
    """The RBAC verbs the API server checks for one request."""
    method = request.method.value.upper()
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return {"watch"}
        return {"get"} if request.name else {"list"}
    if method == "PATCH":
        content_type = (request.headers.get("Content-Type") or request.headers.get("content-type") or "")
        # Server-side apply of an object that does not exist yet is a create: the server checks
        # both verbs. The operator applies children it has not created before in every scenario.
        return {"patch", "create"} if content_type.startswith("application/apply-patch") else {"patch"}
    return {{"POST": "create", "PUT": "update"}.get(method, "delete" if request.name else "deletecollection")}


def operator_requests(emulator, since: int) -> list[tuple[Grant, str | None]]:
    """(grant, namespace) for each API request the operator sent after request number `since`."""
    used = []
    for request in list(emulator.emulator._requests)[since:]:
        agent = request.headers.get("User-Agent") or request.headers.get("user-agent") or ""
        if not agent.startswith(OPERATOR_AGENTS) or request.resource is None or request.resource.plural is None:
            continue  # other clients, and discovery (allowed to every authenticated user)
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        for verb in rbac_verbs(request):
            used.append(((request.resource.group or "", resource, verb), request.namespace))
    return used


def grants_of(role: dict) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in role.get("rules") or []
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def bound_grants(objects: list[dict], account: str) -> tuple[set[Grant], dict[str, set[Grant]]]:
    """What the account may do: cluster-wide (ClusterRoles through ClusterRoleBindings), and per
    namespace (Roles through RoleBindings)."""
    def bound(binding: dict) -> bool:
        return {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in binding["subjects"]

    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("ClusterRole", "Role")}  # fmt: skip
    cluster: set[Grant] = set()
    namespaced: dict[str, set[Grant]] = {}
    for binding in objects:
        if binding["kind"] == "ClusterRoleBinding" and bound(binding):
            cluster |= grants_of(roles[("ClusterRole", None, binding["roleRef"]["name"])])
        elif binding["kind"] == "RoleBinding" and bound(binding):
            ns = binding["metadata"]["namespace"]
            namespaced.setdefault(ns, set()).update(grants_of(roles[("Role", ns, binding["roleRef"]["name"])]))
    return cluster, namespaced


def operator_command(deployment: dict) -> tuple[list[str], dict[str, str]]:
    """The chart's container, run as a local process: its args and its literal env."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The liveness endpoint is not an API request; leave it out so parallel runs don't share a port.
    args = [a for a in container.get("args") or [] if not a.startswith("--liveness=")]
    env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    return [sys.executable, "-m", "gemma_operator", "run", *args], env


def drive_lifecycle(cluster: Cluster, emulator, secret_check: bool) -> None:
    """Everything the operator does in normal life, so every permission it needs is exercised."""
    cluster.api.request("POST", f"/api/v1/namespaces/{cluster.ns}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"token": "x"}})
    cluster.create("chat", {"hfTokenSecretRef": {"name": "hf"}})
    cluster.wait(lambda: cluster.phase("chat") == "Deploying" and cluster.service("chat"), "chat deployed", 30)
    # Its pod waits for a node: the operator watches it and reads the autoscaler's Events about it.
    pod = model_pod(cluster, "chat")
    write_pod_status(cluster, pod, {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": stamp(),
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]})  # fmt: skip
    cluster.wait(lambda: condition(cluster.gd("chat"), "Progressing").get("reason") == "WaitingForCapacity",
                 "chat waiting for capacity", 30)  # fmt: skip
    emulator.set_deployment_ready(cluster.ns, "chat")
    cluster.wait(lambda: cluster.phase("chat") == "Ready", "chat Ready", 30)
    # A child deleted by hand: the operator reads its owner by name, then applies it again.
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/services/chat")
    cluster.wait(lambda: cluster.service("chat"), "the Service re-created", 30)
    edit_by_hand(cluster, "services", "v1")
    cluster.patch_spec("chat", {"maxModelLen": 8192})
    cluster.wait(lambda: (cluster.gd("chat").get("status") or {}).get("observedGeneration") == 2, "the update", 30)
    drive_optional_children(cluster, emulator)
    # A shared cache: created by one, joined by another, left by both (the last deletes it).
    for name in ("cached", "cached-2"):
        cluster.create(name, {"cache": {"type": "pvc"}})
    jobs = f"/apis/batch/v1/namespaces/{cluster.ns}/jobs"
    cluster.wait(lambda: [j for j in cluster.get(jobs)["items"]
                          if len(j["metadata"].get("ownerReferences") or []) == 2], "a Job shared by two", 30)  # fmt: skip
    for name in ("cached", "cached-2"):
        cluster.patch_spec(name, {"cache": {"type": "emptyDir"}})
    cluster.wait(lambda: not cluster.get(jobs)["items"], "the unused Job deleted", 30)
    cluster.create("gated", {"hfTokenSecretRef": {"name": "missing"}})
    if not secret_check:  # applied; the pod cannot start without the Secret
        gated = model_pod(cluster, "gated")
        write_pod_status(cluster, gated, {"phase": "Pending", "conditions": scheduled(), "containerStatuses": [{
            "name": gated["spec"]["containers"][0]["name"], "image": gated["spec"]["containers"][0]["image"],
            "imageID": "", "ready": False, "restartCount": 0, "started": False, "lastState": {},
            "state": {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "missing" not found'}}}]})
    # A chat template from a ConfigMap: read by name (get) on the reconcile and the resync, never listed or watched.
    cluster.api.request("POST", f"/api/v1/namespaces/{cluster.ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "templates"},
        "data": {"chat.jinja": "{% for m in messages %}{{ m.content }}{% endfor %}"}})
    cluster.create("templated", {"chatTemplate": {"configMapRef": {"name": "templates", "key": "chat.jinja"}}})
    cluster.wait(lambda: cluster.deployment("templated"), "the templated Deployment", 30)
    cluster.create("huge", {"accelerator": "nvidia-a10g"})  # no node, no GKE shape to scale up: NoFit
    cluster.wait(lambda: {e["reason"] for e in cluster.events("gated") + cluster.events("huge")}
                 >= {"SecretNotFound", "NoFit"}, "the warning Events", 30)  # fmt: skip
    for name in ("chat", "gated", "huge", "cached", "cached-2", "templated"):
        cluster.api.request("DELETE", cluster.gd_path(name))
    cluster.wait(lambda: not cluster.get(cluster.gd_path())["items"], "everything deleted", 30)
    time.sleep(1.0)  # let the operator see the children go


def optional(cluster: Cluster, plural: str, group_version: str, name: str = "chat") -> dict | None:
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return cluster.get(f"{base}/namespaces/{cluster.ns}/{plural}/{name}")


def edit_by_hand(cluster: Cluster, plural: str, group_version: str, name: str = "chat") -> None:
    """Change the digest annotation of a child the operator created (on first sight: a create) and
    wait for its repair: the operator's first patch of it (ownership upgrade, then apply)."""
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{base}/namespaces/{cluster.ns}/{plural}/{name}"
    cluster.api.request("PATCH", path, {"metadata": {"annotations": {DIGEST: "edited"}}},
                        content_type="application/merge-patch+json")
    cluster.wait(lambda: cluster.get(path)["metadata"]["annotations"][DIGEST] != "edited", f"the {plural} repaired", 30)


def drive_optional_children(cluster: Cluster, emulator) -> None:
    """Children that come and go: the PDB, the HPA, KEDA's ScaledObject and the collectors, as
    the cluster starts serving their CRDs (a Prometheus Operator first, then Managed Prometheus
    and KEDA)."""
    def generation_reconciled():
        gd = cluster.gd("chat")
        return (gd.get("status") or {}).get("observedGeneration") == gd["metadata"]["generation"]

    cluster.patch_spec("chat", {"replicas": 2})
    cluster.wait(lambda: optional(cluster, "poddisruptionbudgets", "policy/v1"), "the PDB", 30)
    edit_by_hand(cluster, "poddisruptionbudgets", "policy/v1")
    cluster.patch_spec("chat", {"replicas": 1})
    cluster.wait(lambda: optional(cluster, "poddisruptionbudgets", "policy/v1") is None, "the PDB deleted", 30)
    queue = {"minReplicas": 1, "maxReplicas": 3, "metric": "queue", "target": 4, "provider": "hpa"}
    emulator.apply_crds(THIRD_PARTY_CRDS_ONE["ServiceMonitor"])
    cluster.patch_spec("chat", {"autoscaling": queue})
    cluster.wait(lambda: optional(cluster, "horizontalpodautoscalers", "autoscaling/v2"), "the HPA", 30)
    cluster.wait(generation_reconciled, "autoscaling on", 30)
    edit_by_hand(cluster, "horizontalpodautoscalers", "autoscaling/v2")
    repair_unwatched(cluster)
    for kind in ("PodMonitoring", "ScaledObject"):
        emulator.apply_crds(THIRD_PARTY_CRDS_ONE[kind])
    cluster.patch_spec("chat", {"autoscaling": {**queue, "provider": "keda"}})
    cluster.wait(lambda: optional(cluster, "scaledobjects", "keda.sh/v1alpha1"), "the ScaledObject", 30)
    cluster.wait(lambda: optional(cluster, "horizontalpodautoscalers", "autoscaling/v2") is None, "the HPA deleted", 30)
    repair_unwatched(cluster)
    cluster.patch_spec("chat", {"autoscaling": None})
    cluster.wait(lambda: optional(cluster, "scaledobjects", "keda.sh/v1alpha1") is None, "the ScaledObject deleted", 30)
    cluster.wait(generation_reconciled, "autoscaling off", 30)
    # spec.gateway: the pool, its picker and the route, and the Gateway read for its address; then pruned.
    for kind in ("InferencePool", "HTTPRoute", "Gateway"):
        emulator.apply_crds(THIRD_PARTY_CRDS_ONE[kind])
    cluster.patch_spec("chat", {"gateway": {"parentRefs": [{"name": "inference-gateway"}]}})
    cluster.wait(lambda: optional(cluster, "httproutes", "gateway.networking.k8s.io/v1"), "the HTTPRoute", 30)
    cluster.wait(generation_reconciled, "gateway on", 30)
    repair_unwatched(cluster, GATEWAY_UNWATCHED)
    cluster.patch_spec("chat", {"gateway": None})
    cluster.wait(lambda: optional(cluster, "httproutes", "gateway.networking.k8s.io/v1") is None
                 and cluster.deployment("chat-epp") is None, "the gateway deleted", 30)  # fmt: skip
    cluster.wait(generation_reconciled, "gateway off", 30)


UNWATCHED = (("scaledobjects", "keda.sh/v1alpha1"), ("podmonitorings", "monitoring.googleapis.com/v1"),
             ("servicemonitors", "monitoring.coreos.com/v1"))  # fmt: skip
# spec.gateway's unwatched objects: (plural, group/version, name) (the picker's are NAME-epp)
GATEWAY_UNWATCHED = (("inferencepools", "inference.networking.k8s.io/v1", "chat"),
                     ("httproutes", "gateway.networking.k8s.io/v1", "chat"),
                     ("serviceaccounts", "v1", "chat-epp"), ("configmaps", "v1", "chat-epp"),
                     ("roles", "rbac.authorization.k8s.io/v1", "chat-epp"),
                     ("rolebindings", "rbac.authorization.k8s.io/v1", "chat-epp"))  # fmt: skip


def repair_unwatched(cluster: Cluster, kinds: tuple[tuple[str, ...], ...] = UNWATCHED) -> None:
    """Delete each unwatched child there is by hand: the resync lists its kind and it comes back."""
    for plural, group_version, *named in kinds:
        name = named[0] if named else "chat"
        base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            there = optional(cluster, plural, group_version, name)
        except kubernetes.client.ApiException:  # not served
            continue
        if there:
            cluster.api.request("DELETE", f"{base}/namespaces/{cluster.ns}/{plural}/{name}")
            cluster.wait(lambda p=plural, g=group_version, n=name, u=there["metadata"]["uid"]:
                         (o := optional(cluster, p, g, n)) and o["metadata"]["uid"] != u,
                         f"the {plural} re-created by the resync", 30)  # fmt: skip


def third_party_crd_dirs(tmp: pathlib.Path) -> dict[str, pathlib.Path]:
    """One folder per third-party CRD (apply_crds takes a folder), read from ../shared/crds."""
    dirs = {}
    for kind, name in (("ServiceMonitor", "monitoring.coreos.com_servicemonitors.yaml"),
                       ("PodMonitoring", "monitoring.googleapis.com_podmonitorings.yaml"),
                       ("ScaledObject", "keda.sh_scaledobjects.yaml"),
                       ("InferencePool", "inference.networking.k8s.io_inferencepools.yaml"),
                       ("HTTPRoute", "gateway.networking.k8s.io_httproutes.yaml"),
                       ("Gateway", "gateway.networking.k8s.io_gateways.yaml")):  # fmt: skip
        source = THIRD_PARTY_CRDS / name
        if not source.exists():
            pytest.skip(f"{source} is missing (the third-party CRDs live in ../shared/crds)")
        (tmp / kind).mkdir(parents=True, exist_ok=True)
        (tmp / kind / name).symlink_to(source)
        dirs[kind] = tmp / kind
    return dirs


def remove_third_party_crds(emulator) -> None:
    for name in ("servicemonitors.monitoring.coreos.com", "podmonitorings.monitoring.googleapis.com",
                 "scaledobjects.keda.sh", "inferencepools.inference.networking.k8s.io",
                 "httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io"):  # fmt: skip
        try:
            emulator.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise


THIRD_PARTY_CRDS = pathlib.Path(os.environ.get("GEMMA_THIRD_PARTY_CRDS", ROOT.parent / "shared" / "crds"))
THIRD_PARTY_CRDS_ONE: dict[str, pathlib.Path] = {}


def start_peering(emulator, objects: list[dict]) -> None:
    """The peering CRDs and objects the chart ships, as Helm would install them."""
    peerings = [o for o in objects if o["kind"] in ("KopfPeering", "ClusterKopfPeering")]
    if not peerings:
        return
    crds = ROOT / "charts/gemma-operator/files"
    emulator.apply_crds(crds)
    for obj in peerings:
        ns = obj["metadata"].get("namespace")
        plural = obj["kind"].lower() + "s"
        create_unless_present(emulator, f"/apis/kopf.dev/v1/namespaces/{ns}/{plural}" if ns
                              else f"/apis/kopf.dev/v1/{plural}", obj)  # fmt: skip


def create_unless_present(api, collection: str, obj: dict) -> None:
    """Create; an object already there from an earlier scenario (409 AlreadyExists) will do."""
    try:
        api.request("POST", collection, obj)
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name.removesuffix("-values.yaml") for p in CI_VALUES])
def test_chart_rbac_is_exactly_what_the_operator_uses(emulator, render, values, namespace,  # noqa: F811
                                                      create_nodes, tmp_path):  # fmt: skip
    objects = render(values)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    cluster_grants, namespace_grants = bound_grants(objects, account)
    command, chart_env = operator_command(deployment)
    watched = [a.split("=", 1)[1] for a in command if a.startswith("--namespace=")]
    ns = watched[0] if watched else namespace
    for name in watched:
        create_unless_present(emulator, "/api/v1/namespaces",
                              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    start_peering(emulator, objects)
    create_nodes.from_fixture("gke-l4")
    remove_third_party_crds(emulator)  # each scenario starts where none is served
    THIRD_PARTY_CRDS_ONE.update(third_party_crd_dirs(tmp_path / "crds"))

    # The chart's capacity ConfigMap, where the rendered pod mounts it: the operator starts on it.
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-capacity"))
    (tmp_path / "capacity.yaml").write_text(config["data"]["capacity.yaml"])
    chart_env[capacity.ENV] = str(tmp_path / "capacity.yaml")
    env = {**os.environ, **chart_env, "KUBECONFIG": str(emulator.kubeconfig), metrics.PORT_ENV: "0",
           handlers.RESYNC_ENV: "1",  # the periodic resync is part of what the RBAC must allow
           handlers.DISCOVERY_ENV: "0",  # see CRDs served from one spec change to the next
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    since = len(emulator.emulator._requests)
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            drive_lifecycle(Cluster(emulator, ns), emulator, chart_env.get(handlers.SECRET_CHECK_ENV) == "true")
        finally:
            proc.send_signal(signal.SIGTERM)  # a graceful exit: peering says goodbye, too
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            remove_third_party_crds(emulator)
    used = operator_requests(emulator, since)
    assert used, f"no operator requests recorded:\n{log_path.read_text()[-3000:]}"

    denied = sorted({(grant, req_ns) for grant, req_ns in used
                     if grant not in cluster_grants and grant not in namespace_grants.get(req_ns or "", set())},
                    key=str)  # fmt: skip
    assert not denied, f"the chart does not allow what the operator sends: {denied}"
    granted = cluster_grants.union(*namespace_grants.values())
    unused = sorted(granted - {grant for grant, _ in used} - set(ADMISSION_ONLY))
    assert not unused, f"the chart grants what the operator never uses: {unused}"
    # Wherever the operator writes GemmaDeployments (their status), it must also hold the admission-only grants.
    scopes = {"cluster-wide": cluster_grants, **namespace_grants}
    writable = {scope for scope, grants in scopes.items()
                if ("gemma.dev", "gemmadeployments/status", "patch") in grants}  # fmt: skip
    assert writable, scopes
    for grant, reason in ADMISSION_ONLY.items():
        assert grant not in {g for g, _ in used}, f"{grant} is sent after all: it is no exception"
        missing = sorted(scope for scope in writable if grant not in scopes[scope])
        assert not missing, f"the chart does not grant {grant} in {missing}; admission checks it ({reason})"
