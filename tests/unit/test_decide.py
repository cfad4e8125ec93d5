"""decide(): one reconcile as data, without kopf or an API server.

Each row is a scenario of the integration tests (tests/integration/): the resource and what the
shell observed, and the Intent expected, summarised as what it applies (how, kind), prunes, the
Events it posts, the phase and reason it writes (or nothing), and its recheck / retry delays.
The live children of a settled resource are the ones decide itself rendered on the reconcile
before, as the server keeps them: real parts, not hand-written stand-ins.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import datetime
import pathlib
from typing import Any

import pytest

from gemma_operator import chat_template, gateway, inventory, planner, pods, render, rollout, scaling
from gemma_operator import decide as decide_mod
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.decide import Observed, Settings, decide, digest, refused
from tests.conftest import node_list

NS, NAME, UID = "gemma", "chat", "uid-chat"
NOW = "2026-11-29T21:30:00Z"
ENDPOINT = f"http://{NAME}.{NS}.svc.cluster.local:8000/v1"
KEDA, POD_MONITORING, SERVICE_MONITOR = scaling.KEDA, scaling.POD_MONITORING, scaling.SERVICE_MONITOR
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 3, "metric": "queue", "target": 4}
STARTUP_BUDGET_S = 10 * 66  # the pods' startup probe below: periodSeconds x failureThreshold


def ago(minutes: float) -> str:
    moment = datetime.datetime(2026, 11, 29, 21, 30, tzinfo=datetime.UTC) - datetime.timedelta(minutes=minutes)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def resource(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None,
             generation: int = 1) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
            "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": generation, "resourceVersion": "7"},
            "spec": spec or {}, "status": status}  # fmt: skip


def merge(current: dict[str, Any] | None, patch: dict[str, Any] | None) -> dict[str, Any]:
    """A merge patch applied as the API server does (null deletes)."""
    out = copy.deepcopy(current or {})
    for key, value in (patch or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def as_stored(obj: dict[str, Any], n: int) -> dict[str, Any]:
    """A child as the server keeps it after the operator's apply."""
    live = copy.deepcopy(dict(obj))
    live["metadata"].update(uid=f"uid-{obj['kind']}-{obj['metadata']['name']}", resourceVersion=str(100 + n),
                            generation=1)  # fmt: skip
    live["status"] = {}
    return live


@dataclasses.dataclass
class World:
    """A resource and what the shell observes of it."""

    resource: dict[str, Any]
    observed: Observed
    nodes: tuple[str, ...] = ("gke-l4",)  # node fixtures


def fresh(spec: dict[str, Any] | None = None, nodes: tuple[str, ...] = ("gke-l4",), **observed: Any) -> World:
    return World(resource(spec), Observed(**observed), nodes)


def settled(catalog, spec: dict[str, Any] | None = None, nodes: tuple[str, ...] = ("gke-l4",),
            settings: Settings = Settings(), served: frozenset = frozenset(),
            config_map: chat_template.Source | None = None) -> World:  # fmt: skip
    """The resource after its first reconcile: its status written, its children as applied."""
    world = fresh(spec, nodes, served=served if {"autoscaling", "gateway"} & set(spec or {}) else None,
                  config_map=config_map)  # fmt: skip
    intent = run(catalog, world, settings)
    children, shared, digests = {}, {}, {}
    for n, item in enumerate((*intent.claims, *intent.applies)):
        live = as_stored(item.obj, n)
        kind, name = item.obj["kind"], item.obj["metadata"]["name"]
        if item.digest is not None:
            digests[item.digest_key or kind] = item.digest
        elif kind in decide_mod.SHARED:
            shared[(kind, name)] = live
        else:
            children[(kind, name)] = live
    observed = Observed(children, shared, digests, served=world.observed.served, config_map=config_map)
    return World(resource(spec, merge(None, intent.status)), observed, nodes)


def with_deployment(world: World, **changes: Any) -> World:
    """The live Deployment changed by the cluster (status) or by hand (spec)."""
    children = dict(world.observed.children)
    deployment = copy.deepcopy(children[("Deployment", NAME)])
    for key, value in changes.items():
        deployment[key] = merge(deployment.get(key), value) if isinstance(value, dict) else value
    children[("Deployment", NAME)] = deployment
    return dataclasses.replace(world, observed=dataclasses.replace(world.observed, children=children))


def with_observed(world: World, **changes: Any) -> World:
    return dataclasses.replace(world, observed=dataclasses.replace(world.observed, **changes))


def ready(world: World, replicas: int = 1) -> World:
    return with_deployment(world, status={"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                                          "observedGeneration": 1})  # fmt: skip


def run(catalog, world: World, settings: Settings = Settings()) -> decide_mod.Intent:
    nodes = [node for fixture in world.nodes for node in node_list(fixture)]
    pools = inventory.pools(nodes, catalog, (world.resource.get("spec") or {}).get("nodeSelector"))
    return decide(world.resource, world.observed, pools, catalog, settings, NOW)


def summary(intent: decide_mod.Intent, world: World) -> dict[str, Any]:
    """What an Intent does, in a row's terms; the status as it is once the patch is written."""
    written = merge(world.resource.get("status"), intent.status)
    conditions = {c["type"]: c for c in written.get("conditions") or []}
    return {
        "outcome": intent.outcome,
        "claims": [(c.how, c.obj["kind"]) for c in intent.claims],
        "prunes": [(p.how, p.kind) for p in intent.prunes],
        "applies": [a.obj["kind"] for a in intent.applies],
        "events": [(e.type, e.reason) for e in intent.events],
        "status": None if intent.status is None else (written.get("phase"), (conditions.get("Ready") or {}).get("reason")),
        "recheck": intent.recheck_s,
        "retry": intent.retry_s,
        "expands": [(e.claim, e.storage) for e in intent.expands],
    }


def expect(outcome="Applied", claims=(), prunes=(), applies=(), events=(), status=None, recheck=None, retry=None,
           expands=()):  # fmt: skip
    return {"outcome": outcome, "claims": list(claims), "prunes": list(prunes), "applies": list(applies),
            "events": list(events), "status": status, "recheck": recheck, "retry": retry, "expands": list(expands)}


# ----------------------------------------------------------------------- model pods
IMAGE = "vllm/vllm-openai:v0.32.0"


def pod(*, phase="Running", conditions=(), statuses=(), **status: Any) -> dict[str, Any]:
    return pods.essentials({
        "metadata": {"name": "chat-7d9f8-abcde", "namespace": NS, "labels": {"app.kubernetes.io/instance": NAME}},
        "spec": {"containers": [{"name": "vllm", "image": IMAGE,
                                 "resources": {"limits": {"memory": "24Gi", "nvidia.com/gpu": "1"}},
                                 "startupProbe": {"periodSeconds": 10, "failureThreshold": 66}}]},
        "status": {"phase": phase, "conditions": list(conditions), "containerStatuses": list(statuses), **status}})


def scheduled() -> dict[str, Any]:
    return {"type": "PodScheduled", "status": "True", "lastTransitionTime": ago(10)}


def container(state, last=None, restarts=0) -> dict[str, Any]:
    return {"name": "vllm", "image": IMAGE, "ready": False, "started": False, "restartCount": restarts,
            "state": state, "lastState": last or {}}  # fmt: skip


def terminated(reason: str, code: int, message: str | None = None) -> dict[str, Any]:
    return {"terminated": {"reason": reason, "exitCode": code, "startedAt": ago(3), "finishedAt": ago(2),
                           **({"message": message} if message else {})}}  # fmt: skip


POD_ROWS = [
    # id, pod, expected (phase, reason), Event, recheck
    ("WaitingForCapacity", pod(phase="Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": ago(2),
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]),
     ("Deploying", "WaitingForCapacity"), ("Normal", "WaitingForCapacity"), pods.RECHECK_S),
    ("ImagePullFailed", pod(phase="Pending", conditions=[scheduled()], statuses=[container(
        {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{IMAGE}"'}})]),
     ("Degraded", "ImagePullFailed"), ("Warning", "ImagePullFailed"), None),
    ("OutOfMemory", pod(conditions=[scheduled()], statuses=[container(
        {"waiting": {"reason": "CrashLoopBackOff"}}, terminated("OOMKilled", 137), restarts=3)]),
     ("Degraded", "OutOfMemory"), ("Warning", "OutOfMemory"), None),
    ("CrashLoop", pod(conditions=[scheduled()], statuses=[container(
        {"waiting": {"reason": "CrashLoopBackOff"}}, terminated("Error", 1, "ValueError: boom"), restarts=5)]),
     ("Degraded", "CrashLoop"), ("Warning", "CrashLoop"), None),
    ("SecretNotFound", pod(phase="Pending", conditions=[scheduled()], statuses=[container(
        {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "hf" not found'}})]),
     ("Degraded", "SecretNotFound"), ("Warning", "SecretNotFound"), None),
    ("LoadingModel", pod(conditions=[scheduled()], startTime=ago(5), statuses=[container(
        {"running": {"startedAt": ago(3.5)}})]),
     ("Deploying", "LoadingModel"), ("Normal", "LoadingModel"), STARTUP_BUDGET_S - 3.5 * 60 + 1),  # the budget's end
    ("Evicted", pod(phase="Failed", reason="Evicted", message="The node was low on resource: ephemeral-storage.",
                    conditions=[scheduled()]),
     ("Degraded", "Evicted"), ("Warning", "Evicted"), None),
]  # fmt: skip


@pytest.mark.parametrize(("pod_", "status", "event", "recheck"), [row[1:] for row in POD_ROWS],
                         ids=[row[0] for row in POD_ROWS])  # fmt: skip
def test_what_blocks_the_model_pods_is_the_status_and_one_event(catalog, pod_, status, event, recheck):
    """test_pods.py: test_each_failing_pod_state_stalls_with_its_reason_and_an_event, and the
    unschedulable pod waiting for capacity (rechecked while its budget runs)."""
    world = with_observed(settled(catalog), pods=(pod_,))
    assert summary(run(catalog, world), world) == expect(events=[event], status=status, recheck=recheck)


def later(catalog, world: World, intent: decide_mod.Intent, minutes: float) -> decide_mod.Intent:
    """The same world decided again `minutes` later, its status as `intent` wrote it."""
    after = World(resource(world.resource.get("spec"), merge(world.resource.get("status"), intent.status)),
                  world.observed, world.nodes)  # fmt: skip
    pools = inventory.pools([node for fixture in world.nodes for node in node_list(fixture)], catalog, None)
    moment = datetime.datetime(2026, 11, 29, 21, 30, tzinfo=datetime.UTC) + datetime.timedelta(minutes=minutes)
    return decide(after.resource, after.observed, pools, catalog, Settings(), moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_a_loading_model_writes_its_start_time_once_and_is_rechecked_at_its_budgets_end(catalog):
    """test_loading.py: the message names the start (no minutes since), status.loadingSince holds
    it, and a reconcile minutes later writes nothing; the recheck comes when the budget runs out."""
    loading = {row[0]: row[1] for row in POD_ROWS}["LoadingModel"]
    world = with_observed(settled(catalog), pods=(loading,))
    first = run(catalog, world)
    assert first.status["loadingSince"] == ago(3.5)
    message = {c["type"]: c for c in first.status["conditions"]}["Progressing"]["message"]
    assert f"since {ago(3.5)}" in message and "min since" not in message, message
    assert first.recheck_s == STARTUP_BUDGET_S - 3.5 * 60 + 1
    again = later(catalog, world, first, 2)  # two of the old per-minute rechecks
    assert summary(again, world) == expect(recheck=STARTUP_BUDGET_S - 5.5 * 60 + 1)
    past = later(catalog, world, first, 8)  # started 11.5 min ago: past the 11-min budget
    assert "longer than its 11-min startup budget" in {c["type"]: c for c in past.status["conditions"]}[
        "Progressing"]["message"]  # fmt: skip
    assert past.recheck_s is None and "loadingSince" not in past.status  # unchanged: not written again


def test_a_pod_waiting_for_a_node_writes_status_only_when_what_it_says_changes(catalog):
    """test_loading.py: the minute's recheck reads the autoscaler's Events again, but the message
    names when the wait started, not the minutes since: nothing to write until an Event comes."""
    waiting = {row[0]: row[1] for row in POD_ROWS}["WaitingForCapacity"]
    world = with_observed(settled(catalog), pods=(waiting,))
    first = run(catalog, world)
    message = {c["type"]: c for c in first.status["conditions"]}["Progressing"]["message"]
    assert f"Waiting since {ago(2)} for a node" in message and "min of the" not in message, message
    assert summary(later(catalog, world, first, 3), world) == expect(recheck=pods.RECHECK_S)
    event = {"reason": "TriggeredScaleUp", "message": "pod triggered scale-up: [{gke-l4-pool 0->1 (max: 4)}]",
             "time": ago(1)}  # fmt: skip
    told = later(catalog, with_observed(world, pods=({**waiting, "events": [event]},)), first, 3)
    assert "Cluster autoscaler (TriggeredScaleUp)" in {c["type"]: c for c in told.status["conditions"]}[
        "Progressing"]["message"]  # fmt: skip


def test_a_pod_a_resync_found_deleted_no_longer_counts(catalog):
    """test_resync.py: a crash-looping pod deleted while the pod watch was expired stays in the
    index; once the resync marks it gone, the status no longer says CrashLoop."""
    crashing = {row[0]: row[1] for row in POD_ROWS}["CrashLoop"]
    world = with_observed(settled(catalog), pods=(crashing,))
    stalled = run(catalog, world)
    assert summary(stalled, world)["status"] == ("Degraded", "CrashLoop")
    gone = World(resource({}, merge(world.resource["status"], stalled.status)),
                 dataclasses.replace(world.observed, gone_pods=frozenset({crashing["name"]})), world.nodes)  # fmt: skip
    intent = run(catalog, gone)
    conditions = {c["type"]: c for c in merge(gone.resource["status"], intent.status)["conditions"]}
    assert summary(intent, gone)["status"] == ("Deploying", "RollingOut")  # what a settled world without pods says
    assert conditions["Stalled"]["status"] == "False" and conditions["Progressing"]["reason"] != "CrashLoop"


# ------------------------------------------------------------------------- scenarios
def scenario(catalog) -> dict[str, tuple[World, Settings, dict[str, Any]]]:
    """id -> (the world, the settings, the expected Intent summary)."""
    base = settled(catalog)
    rows: dict[str, tuple[World, Settings, dict[str, Any]]] = {}
    default = Settings()

    # test_create_gives_an_owned_deployment_a_service_and_an_explained_status: no Planned Event at creation.
    rows["create"] = (fresh(), default, expect(applies=["Deployment", "Service"], status=("Deploying", "RollingOut")))
    # test_ready_follows_the_deployment: one Ready Event that says what is served.
    rows["ready"] = (ready(base), default, expect(events=[("Normal", "Ready")], status=("Ready", "ReplicasReady")))
    # test_a_restart_with_nothing_changed_writes_nothing / test_resync_with_nothing_gone_writes_nothing
    rows["idle"] = (base, default, expect())
    rows["idle-ready"] = (settled_ready := _settle(catalog, ready(base)), default, expect())
    # test_hand_edits_of_children_are_reverted: the template is applied again, which rolls the pods.
    edited = copy.deepcopy(base.observed.children[("Deployment", NAME)]["spec"]["template"])
    edited["spec"]["containers"][0]["image"] = "evil:latest"
    rows["hand-edit"] = (with_deployment(base, spec={"template": edited}), default,
                         expect(applies=["Deployment"], events=[("Normal", "RollingOut")]))
    service = dict(base.observed.children)
    service[("Service", NAME)] = merge(service[("Service", NAME)], {"spec": {"type": "NodePort"}})
    rows["hand-edit-service"] = (with_observed(base, children=service), default, expect(applies=["Service"]))
    # test_a_child_deleted_while_its_watch_is_down_and_expired_is_re_created: confirm the owner first.
    gone = {**base.observed.children, ("Service", NAME): None}
    rows["vanished-child"] = (with_observed(base, children=gone), default, expect(applies=["Service"]))
    # test_spec_change_rolls_out_the_new_plan: a new generation re-plans; the changed plan is announced.
    spec_change = dataclasses.replace(base, resource={**resource({"quantization": "fp8"}, base.resource["status"], 2)})
    rows["spec-change"] = (spec_change, default, expect(applies=["Deployment"], status=("Deploying", "RollingOut"),
                                                        events=[("Normal", "RollingOut"), ("Normal", "Planned")]))
    # test_losing_the_chosen_pool_replans: the pool is gone, a T4 pool serves now.
    rows["pool-lost"] = (dataclasses.replace(ready(base), nodes=("gke-t4",)), default,
                         expect(applies=["Deployment", "Service"], status=("Deploying", "RollingOut"),
                                events=[("Normal", "RollingOut"), ("Normal", "Planned")]))
    # test_unrelated_nodes_do_not_move_a_serving_model: a pool a fresh plan would take (the H100; an A100 would
    # not: it plans the L4 too) appears; the selection stays (test_the_sticky_row_is_one_a_fresh_plan_would_move).
    rows["sticky"] = (dataclasses.replace(settled_ready, nodes=("gke-l4", "gke-h100x8")), default, expect())
    # test_no_fit_stalls_with_figures_and_plans_when_a_pool_appears
    # An A10G: no such node and no GKE shape to scale up.
    rows["no-fit"] = (fresh({"accelerator": "nvidia-a10g"}, ("gke-cpu-only",)), default,
                      expect("NoFit", events=[("Warning", "NoFit")], status=("NoFit", "NoFit")))
    # test_declared_capacity_plans_a_scale_up_...: no L4 node yet, GKE's standard shape is added on demand.
    rows["scale-up"] = (fresh({"accelerator": "nvidia-l4"}, ("gke-cpu-only",)), default,
                        expect(applies=["Deployment", "Service"], status=("Deploying", "RollingOut")))
    # test_invalid_spec_is_refused_without_applying_anything / ..._ends_invalid
    rows["invalid-plan"] = (fresh({"model": {"family": "nosuch"}}), default,
                            expect("Invalid", events=[("Warning", "InvalidSpec")], status=("Invalid", "InvalidSpec")))
    rows["invalid-schema"] = (fresh({"replicas": "many"}), default,
                              expect("Invalid", events=[("Warning", "InvalidSpec")], status=("Invalid", "InvalidSpec")))
    # test_the_early_secret_check_runs_only_behind_its_switch: nothing applied, looked at again.
    token = {"hfTokenSecretRef": {"name": "hf", "key": "token"}}
    rows["secret-missing"] = (fresh(token, secret_exists=False), Settings(secret_check=True),
                              expect("ApplyFailed", events=[("Warning", "SecretNotFound")],
                                     status=("Degraded", "ApplyFailed"), retry=decide_mod.SECRET_RECHECK_S))
    rows["secret-present"] = (fresh(token, secret_exists=True), Settings(secret_check=True),
                              expect(applies=["Deployment", "Service"], status=("Deploying", "RollingOut")))
    # test_a_gated_checkpoint_without_a_token_posts_token_missing: on the first plan, too.
    rows["token-missing"] = (fresh({"model": {"family": "gemma3"}}), default,
                             expect(applies=["Deployment", "Service"], events=[("Warning", "TokenMissing")],
                                    status=("Deploying", "RollingOut")))
    # test_the_pdb_appears_and_disappears_with_the_replica_count
    rows["pdb"] = (fresh({"replicas": 2}), default, expect(applies=["Deployment", "Service", "PodDisruptionBudget"],
                                                           status=("Deploying", "RollingOut")))
    two = settled(catalog, {"replicas": 2})
    rows["pdb-pruned"] = (dataclasses.replace(two, resource=resource({"replicas": 1}, two.resource["status"], 2)),
                          default, expect(prunes=[("delete", "PodDisruptionBudget")], applies=["Deployment"],
                                          status=("Deploying", "RollingOut")))
    # test_the_autoscaler_owns_the_replicas_while_autoscaling_is_on: an HPA; the live count is handed over.
    hpa = {"autoscaling": {**AUTOSCALING, "provider": "hpa"}}
    rows["hpa"] = (fresh(hpa, served=frozenset({POD_MONITORING})), default,
                   expect(applies=["Deployment", "Service", "PodMonitoring", "HorizontalPodAutoscaler"],
                          status=("Deploying", "RollingOut")))
    rows["scaled-object"] = (fresh({"autoscaling": AUTOSCALING}, served=frozenset({KEDA, SERVICE_MONITOR})), default,
                             expect(applies=["Deployment", "Service", "ServiceMonitor", "ScaledObject"],
                                    status=("Deploying", "RollingOut")))
    scaled = settled(catalog, {"autoscaling": AUTOSCALING}, served=frozenset({KEDA, POD_MONITORING}))
    off = dataclasses.replace(scaled, resource=resource({}, scaled.resource["status"], 2))
    rows["autoscaling-off"] = (off, default, expect(prunes=[("delete", "ScaledObject"), ("delete", "PodMonitoring")],
                                                    applies=["Deployment"], status=("Deploying", "RollingOut")))
    # test_one_loader_per_checkpoint_and_the_deployments_wait_for_the_fill
    pvc = {"cache": {"type": "pvc"}}
    rows["cache-fill"] = (fresh(pvc), default, expect(claims=[("create", "PersistentVolumeClaim"), ("create", "Job")],
                                                      applies=["Service"], status=("Deploying", "FillingCache")))
    # test_a_failed_fill_stalls_with_the_jobs_message
    filling = settled(catalog, pvc)
    shared = {key: ({**live, "status": {"conditions": [{"type": "Failed", "status": "True", "message": "401"}]}}
                    if key[0] == "Job" else live) for key, live in filling.observed.shared.items()}  # fmt: skip
    rows["cache-failed"] = (with_observed(filling, shared=shared), default,
                            expect(events=[("Warning", "CacheFillFailed")], status=("Degraded", "CacheFillFailed")))
    # test_leaving_the_cache_prunes_what_only_it_used_and_retain_keeps_it
    leaving = dataclasses.replace(filling, resource=resource({}, filling.resource["status"], 2))
    rows["cache-left"] = (leaving, default, expect(prunes=[("delete", "Job"), ("delete", "PersistentVolumeClaim")],
                                                   applies=["Deployment"], status=("Deploying", "RollingOut")))
    other = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "name": "other", "uid": "uid-other"}
    joined = {key: merge(live, {"metadata": {"ownerReferences": [*live["metadata"]["ownerReferences"], other]}})
              for key, live in filling.observed.shared.items()}  # fmt: skip
    rows["cache-shared-left"] = (with_observed(leaving, shared=joined), default,
                                 expect(prunes=[("leave", "Job"), ("leave", "PersistentVolumeClaim")],
                                        applies=["Deployment"], status=("Deploying", "RollingOut")))
    # Issue 20 item 3, test_a_claim_too_small_... / test_a_bound_claim_of_an_expandable_class_is_expanded:
    # the live claim was made when the catalog listed a smaller checkpoint (1Gi).
    claim, needed = cache_claim(filling)
    rows["cache-claim-fits"] = (filling, default, expect())  # it requests what the checkpoint needs
    rounded = smaller_claim(filling, phase="Bound", capacity={"storage": needed})  # the provisioner rounded up
    rows["cache-claim-fits-capacity"] = (rounded, default, expect())
    smaller = smaller_claim(filling)
    rows["cache-claim-expand"] = (smaller, default, expect("Asked", retry=0.0, expands=[(claim, needed)]))
    rows["cache-claim-expanded"] = (with_observed(smaller, expansions={claim: (needed, None)}), default, expect())
    refusal = f'persistentvolumeclaims "{claim}" is forbidden: only dynamically provisioned pvc can be resized'
    too_small = with_observed(smaller, expansions={claim: (needed, refusal)})
    rows["cache-claim-too-small"] = (too_small, default, expect(events=[("Warning", "CacheClaimTooSmall")],
                                                                status=("Degraded", "CacheClaimTooSmall")))
    # A new resource meets a retained claim too small: it joins the claim, creates no loader Job, and waits.
    unowned = {key: merge(live, {"metadata": {"ownerReferences": None}})
               for key, live in smaller.observed.shared.items() if key[0] == "PersistentVolumeClaim"}  # fmt: skip
    rows["cache-claim-too-small-fresh"] = (fresh(pvc, shared=unowned, expansions={claim: (needed, refusal)}), default,
                                           expect(claims=[("join", "PersistentVolumeClaim")], applies=["Service"],
                                                  events=[("Warning", "CacheClaimTooSmall")],
                                                  status=("Degraded", "CacheClaimTooSmall")))
    # tests/integration/test_adapters.py, test_a_filled_cache_gets_one_job_per_adapter_then_the_deployment:
    # a Job per adapter beside the loader; the Deployment waits for all of them; a refusal stalls.
    lora = {**pvc, "adapters": LORAS}
    rows["adapters-fill"] = (fresh(lora), default,
                             expect(claims=[("create", "PersistentVolumeClaim"), ("create", "Job"), ("create", "Job"),
                                            ("create", "Job")], applies=["Service"], status=("Deploying", "FillingCache")))
    lora_filling = settled(catalog, lora)
    loader_done = jobs_ended(lora_filling, {lora_filling_loader(lora_filling): COMPLETE})
    rows["adapters-filling"] = (loader_done, default, expect(status=("Deploying", "FillingCache")))
    refused_rank = jobs_ended(lora_filling, {name: (COMPLETE if name == lora_filling_loader(lora_filling) else
                                                    REFUSED_RANK) for name in job_names(lora_filling)})
    rows["adapters-refused"] = (refused_rank, default, expect(events=[("Warning", "CacheFillFailed")],
                                                              status=("Degraded", "CacheFillFailed")))
    lora_filled = jobs_ended(lora_filling, {name: COMPLETE for name in job_names(lora_filling)})
    rows["adapters-filled"] = (lora_filled, default, expect(applies=["Deployment"], status=("Deploying", "RollingOut")))
    serving = step(catalog, lora_filled)
    grown = {**lora, "adapters": [*LORAS, EXTRA_LORA]}
    added = dataclasses.replace(serving, resource=resource(grown, serving.resource["status"], 2))
    rows["adapter-added"] = (added, default, expect(claims=[("create", "Job")], events=[("Normal", "Planned")],
                                                    status=("Deploying", "FillingCache")))
    # ...once it is filled, the Deployment is sent, and the RollingOut Event names the new adapter.
    rows["adapter-added-filled"] = (jobs_ended(step(catalog, added), {name: COMPLETE for name in job_names(step(
        catalog, added))}), default, expect(applies=["Deployment"], events=[("Normal", "RollingOut")],
                                            status=("Deploying", "RollingOut")))
    # test_an_operator_upgrade_keeps_the_released_template_until_the_opt_in
    rows["update-available"] = (_released(catalog, base), default,
                                expect(applies=["Deployment"], events=[("Normal", "UpdateAvailable")],
                                       status=("Deploying", "RollingOut")))
    rows["update-accepted"] = (_released(catalog, base), Settings(accept_updates=True),
                               expect(applies=["Deployment"], events=[("Normal", "RollingOut"), ("Normal", "Planned")],
                                      status=("Deploying", "RollingOut")))
    # spec.gateway: the picker, the pool and the route, once the cluster serves their CRDs; nothing of them
    # without (the Gateway condition names what is missing); pruned, the route first, once the spec drops it.
    gw = {"gateway": {"parentRefs": [{"name": "inference-gateway", "namespace": "gateways"}]}}
    rows["gateway"] = (fresh(gw, served=frozenset(GATEWAY_SERVED)), default,
                       expect(applies=["Deployment", "Service", *GATEWAY_KINDS], status=("Deploying", "RollingOut")))
    attached = settled(catalog, gw, served=frozenset(GATEWAY_SERVED))
    rows["gateway-idle"] = (attached, default, expect())
    rows["gateway-no-crds"] = (fresh(gw, served=frozenset({gateway.HTTP_ROUTE})), default,
                               expect(applies=["Deployment", "Service"], status=("Deploying", "RollingOut")))
    dropped = dataclasses.replace(attached, resource=resource({}, attached.resource["status"], 2))
    rows["gateway-pruned"] = (dropped, default,
                              expect(prunes=[("delete", kind) for kind in reversed(GATEWAY_KINDS)],
                                     applies=["Deployment"], status=("Deploying", "RollingOut")))
    rows.update(template_rows(catalog))
    return rows


LORAS = [{"name": "support-bot", "repo": "acme/support-lora", "rank": 8}, {"name": "sql-writer", "repo": "acme/sql-lora"}]
EXTRA_LORA = {"name": "faq-bot", "repo": "acme/faq-lora"}
COMPLETE = {"type": "Complete", "status": "True"}
# What the Job controller writes when a podFailurePolicy rule fails a Job (the rank refusal: rule 0).
REFUSED_RANK = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                "message": "Container adapter for pod gemma/x failed with exit code 3 matching FailJob rule at index 0"}


def job_names(world: World) -> list[str]:
    return [name for kind, name in world.observed.shared if kind == "Job"]


def lora_filling_loader(world: World) -> str:
    """The loader Job: named as the claim."""
    return cache_claim(world)[0]


def jobs_ended(world: World, ended: dict[str, dict[str, Any]]) -> World:
    """The world with these Jobs ended as the Job controller writes it (one terminal condition each)."""
    shared = {key: (merge(live, {"status": {"conditions": [ended[key[1]]]}}) if key[0] == "Job" and key[1] in ended
                    else live) for key, live in world.observed.shared.items()}  # fmt: skip
    return with_observed(world, shared=shared)


def step(catalog, world: World) -> World:
    """The world once its reconcile is carried out: status written, what it sent kept as the server would."""
    intent = run(catalog, world)
    children, shared = dict(world.observed.children), dict(world.observed.shared)
    for n, item in enumerate((*intent.claims, *intent.applies)):
        key = (item.obj["kind"], item.obj["metadata"]["name"])
        (shared if key[0] in decide_mod.SHARED else children)[key] = as_stored(item.obj, n)
    resource_ = {**world.resource, "status": merge(world.resource["status"], intent.status)}
    return World(resource_, dataclasses.replace(world.observed, children=children, shared=shared), world.nodes)


# spec.chatTemplate.configMapRef (issue 18 part 5): the ConfigMap as the reconcile read it.
TEMPLATE_SPEC = {"chatTemplate": {"configMapRef": {"name": "templates", "key": "chat.jinja"}}}
GOOD = "{% for m in messages %}<<{{ m.role }}>>{{ m.content }}\n{% endfor %}"
EDITED = "{% for m in messages %}[[{{ m.role }}]]{{ m.content }}\n{% endfor %}"
BROKEN = "{% for m in messages %}\n{{ m.content }\n{% endfor %}"  # line 2: unexpected '}'


def templates(**data: str) -> chat_template.Source:
    return chat_template.Source("templates", data)


def template_rows(catalog) -> dict[str, tuple[World, Settings, dict[str, Any]]]:
    """test_a_config_map_chat_template_is_checked_mounted_and_rolled_out (tests/integration/test_inputs_and_templates.py)."""
    default, refused_ = Settings(), decide_mod.SECRET_RECHECK_S
    absent = chat_template.Source("templates", None)
    deployed = _settle(catalog, ready(settled(catalog, TEMPLATE_SPEC, config_map=templates(**{"chat.jinja": GOOD}))))
    return {
        "template-cm": (fresh(TEMPLATE_SPEC, config_map=templates(**{"chat.jinja": GOOD})), default,
                        expect(applies=["Deployment", "Service"], status=("Deploying", "RollingOut"))),
        "template-cm-missing": (fresh(TEMPLATE_SPEC, config_map=absent), default,
                                expect("ApplyFailed", events=[("Warning", "ChatTemplateNotFound")],
                                       status=("Degraded", "ChatTemplateNotFound"), retry=refused_)),
        "template-cm-no-key": (fresh(TEMPLATE_SPEC, config_map=templates(other=GOOD)), default,
                               expect("ApplyFailed", events=[("Warning", "ChatTemplateNotFound")],
                                      status=("Degraded", "ChatTemplateNotFound"), retry=refused_)),
        "template-cm-syntax": (fresh(TEMPLATE_SPEC, config_map=templates(**{"chat.jinja": BROKEN})), default,
                               expect("Invalid", events=[("Warning", "InvalidChatTemplate")],
                                      status=("Invalid", "InvalidChatTemplate"), retry=refused_)),
        # Serving: an unchanged ConfigMap, or another key edited, restarts nothing; the key edited rolls the
        # pods; a bad edit (or the ConfigMap deleted) changes nothing while the running pods keep serving.
        "template-cm-unchanged": (deployed, default, expect()),
        "template-cm-other-key": (with_observed(deployed, config_map=templates(**{"chat.jinja": GOOD}, other="x")),
                                  default, expect()),
        "template-cm-edited": (with_observed(deployed, config_map=templates(**{"chat.jinja": EDITED})), default,
                               expect(applies=["Deployment"], events=[("Normal", "RollingOut")],
                                      status=("Deploying", "RollingOut"))),
        "template-cm-bad-edit": (with_observed(deployed, config_map=templates(**{"chat.jinja": BROKEN})), default,
                                 expect("Invalid", events=[("Warning", "InvalidChatTemplate")],
                                        status=("Invalid", "InvalidChatTemplate"), retry=refused_)),
        "template-cm-deleted": (with_observed(deployed, config_map=absent), default,
                                expect("ApplyFailed", events=[("Warning", "ChatTemplateNotFound")],
                                       status=("Degraded", "ChatTemplateNotFound"), retry=refused_)),
    }


def cache_claim(world: World) -> tuple[str, str]:
    """The name of the world's live cache claim and the storage it requests."""
    ((_, name), live), = [(k, live) for k, live in world.observed.shared.items() if k[0] == "PersistentVolumeClaim"]
    return name, live["spec"]["resources"]["requests"]["storage"]


def smaller_claim(world: World, storage: str = "1Gi", **status: Any) -> World:
    """The world with its live cache claim requesting `storage` (and that claim status)."""
    shared = {key: (merge(live, {"spec": {"resources": {"requests": {"storage": storage}}}, "status": status})
                    if key[0] == "PersistentVolumeClaim" else live) for key, live in world.observed.shared.items()}
    return with_observed(world, shared=shared)
GATEWAY_SERVED = {*gateway.REQUIRED, gateway.GATEWAY}
GATEWAY_KINDS = [kind for _, kind in gateway.KINDS]


def _settle(catalog, world: World) -> World:
    """The world after its reconcile wrote status."""
    intent = run(catalog, world)
    return dataclasses.replace(world, resource={**world.resource, "status": merge(world.resource["status"],
                                                                                   intent.status)})


def _released(catalog, world: World) -> World:
    """The live Deployment as an earlier release rendered it for this very spec (another image)."""
    deployment = world.observed.children[("Deployment", NAME)]
    template = copy.deepcopy(deployment["spec"]["template"])
    template["spec"]["containers"][0]["image"] = "vllm/vllm-openai:v0.1.0"
    rendered_for = deployment["metadata"]["annotations"][rollout.TEMPLATE_FOR].partition("/")[0]
    status = merge(world.resource["status"], {"selection": {"image": "vllm/vllm-openai:v0.1.0"}})
    world = dataclasses.replace(world, resource={**world.resource, "status": status})
    return with_deployment(world, spec={"template": template}, metadata={"annotations": {
        rollout.TEMPLATE_FOR: f"{rendered_for}/{rollout._digest(template)}"}})


ROWS = ["create", "ready", "idle", "idle-ready", "hand-edit", "hand-edit-service", "vanished-child", "spec-change",
        "pool-lost", "sticky", "no-fit", "invalid-plan", "invalid-schema", "secret-missing", "secret-present",
        "token-missing", "pdb", "pdb-pruned", "hpa", "scaled-object", "autoscaling-off", "cache-fill", "cache-failed",
        "cache-left", "cache-shared-left", "update-available", "update-accepted", "scale-up", "cache-claim-fits",
        "cache-claim-fits-capacity", "cache-claim-expand", "cache-claim-expanded", "cache-claim-too-small",
        "cache-claim-too-small-fresh", "gateway", "gateway-idle", "gateway-no-crds",
        "gateway-pruned", "adapters-fill", "adapters-filling", "adapters-refused", "adapters-filled",
        "adapter-added", "adapter-added-filled", "template-cm", "template-cm-missing", "template-cm-no-key",
        "template-cm-syntax", "template-cm-unchanged", "template-cm-other-key", "template-cm-edited",
        "template-cm-bad-edit", "template-cm-deleted"]  # fmt: skip


@pytest.fixture(scope="module")
def rows(catalog):
    return scenario(catalog)


@pytest.mark.parametrize("row", ROWS)
def test_decide(rows, catalog, row):
    world, settings, expected = rows[row]
    assert summary(run(catalog, world, settings), world) == expected


def test_the_sticky_row_is_one_a_fresh_plan_would_move(rows, catalog):
    """The sticky row proves stickiness only if planning its spec afresh on its nodes picks another pool."""
    world, settings, expected = rows["sticky"]
    afresh = merge(None, run(catalog, fresh(world.resource["spec"], world.nodes), settings).status)
    kept = world.resource["status"]["selection"]["accelerator"]
    assert (kept, afresh["selection"]["accelerator"]) == ("nvidia-l4", "nvidia-h100-80gb")
    assert summary(run(catalog, world, settings), world) == expected == expect()


# What each refusal's Progressing condition says the operator does next: the retry its row pins.
REREADS = "The operator reads ConfigMap 'templates' again every 30 s; it applies nothing until key 'chat.jinja' there "
NEXT_STEPS = {
    "secret-missing": "The operator looks for Secret 'hf' again every 30 s and applies once it exists.",
    **{row: f"{REREADS}holds a template that parses and renders." for row in (
        "template-cm-missing", "template-cm-no-key", "template-cm-syntax", "template-cm-bad-edit", "template-cm-deleted")},
}  # fmt: skip


@pytest.mark.parametrize("row", NEXT_STEPS)
def test_a_refusal_says_what_the_operator_does_next(rows, catalog, row):
    world, settings, _ = rows[row]
    intent = run(catalog, world, settings)
    progressing = {c["type"]: c for c in merge(world.resource.get("status"), intent.status)["conditions"]}["Progressing"]
    assert progressing["message"] == NEXT_STEPS[row]
    assert f"every {intent.retry_s:g} s" in progressing["message"] and "backoff" not in progressing["message"]


# ------------------------------------------------------------------- the Intent's details
def test_a_scale_up_plan_says_so_in_the_selection(catalog):
    intent = run(catalog, fresh({"accelerator": "nvidia-l4"}, ("gke-cpu-only",)))
    assert intent.status["selection"]["capacity"] == "scale-up"


def test_the_ready_event_says_what_is_served(catalog):
    intent = run(catalog, ready(settled(catalog)))
    (event,) = intent.events
    assert event.message == (f"Serving google/gemma-4-E2B-it (bf16) with vllm on nvidia-l4 x1: 1 replica(s) ready "
                             f"at {ENDPOINT}.")  # fmt: skip


def test_a_changed_plan_is_announced_and_counted_the_first_is_only_counted(catalog):
    first = run(catalog, fresh())
    assert first.plans == (("vllm", "nvidia-l4", "bf16"),) and not [e for e in first.events if e.reason == "Planned"]
    moved = run(catalog, dataclasses.replace(ready(settled(catalog)), nodes=("gke-t4",)))
    (planned,) = [e for e in moved.events if e.reason == "Planned"]
    assert planned.message.startswith("Serving google/gemma-4-E2B-it") and "nvidia-tesla-t4" in planned.message
    assert moved.plans and moved.plans[0][1] == "nvidia-tesla-t4"


def test_a_vanished_child_is_re_created_only_once_the_owner_is_confirmed(catalog):
    """A child deleted with its owner (garbage collection) must not come back: the executor first
    confirms the owner exists. A new spec needs no confirmation (the resource was just seen)."""
    base = settled(catalog)
    (again,) = run(catalog, with_observed(base, children={**base.observed.children, ("Service", NAME): None})).applies
    assert again.obj["kind"] == "Service" and again.confirm_owner
    assert not any(item.confirm_owner for item in run(catalog, fresh()).applies)


def test_children_are_created_on_first_sight_and_a_created_ones_ownership_is_upgraded_before_its_next_apply(catalog):
    """The index has no child: create it (execute falls back to an apply on 409). A live child whose
    metadata (as the index keeps it) shows our create's Update entry gets ownership.upgrade's patch
    with its next apply; one that shows none (applied before, or upgraded) gets none."""
    assert {(item.obj["kind"], item.how, item.upgrade) for item in run(catalog, fresh()).applies} == {
        ("Deployment", "create", None), ("Service", "create", None)}
    created = with_deployment(settled(catalog), spec={"replicas": 3},  # a hand edit: the next apply reverts it
                              metadata={"resourceVersion": "7", "managedFields": [
                                  {"manager": "kubectl-edit", "operation": "Update"},
                                  {"manager": "gemma-operator", "operation": "Update"}]})  # fmt: skip
    (item,) = run(catalog, created).applies
    assert item.how == "apply" and item.upgrade == (
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "test", "path": "/metadata/managedFields/1/manager", "value": "gemma-operator"},
        {"op": "test", "path": "/metadata/managedFields/1/operation", "value": "Update"},
        {"op": "replace", "path": "/metadata/managedFields/1/operation", "value": "Apply"})
    (item,) = run(catalog, with_deployment(settled(catalog), spec={"replicas": 3})).applies
    assert item.how == "apply" and item.upgrade is None


def test_an_autoscaled_deployment_hands_its_live_count_over_before_the_apply(catalog):
    scaled = settled(catalog, {"autoscaling": {**AUTOSCALING, "provider": "hpa"}}, served=frozenset())
    edited = copy.deepcopy(scaled.observed.children[("Deployment", NAME)]["spec"]["template"])
    edited["spec"]["containers"][0]["image"] = "evil:latest"
    world = with_deployment(scaled, spec={"replicas": 3, "template": edited})
    (deployment,) = run(catalog, world).applies
    assert deployment.handover_replicas == 3 and "replicas" not in deployment.obj["spec"]


def test_an_idle_autoscaled_resource_applies_nothing_not_even_its_unwatched_kinds(catalog):
    scaled = settled(catalog, {"autoscaling": AUTOSCALING}, served=frozenset({KEDA, POD_MONITORING}))
    assert set(scaled.observed.applied_digests) == {"ScaledObject", "PodMonitoring"}
    assert summary(run(catalog, scaled), scaled) == expect()
    forgotten = with_observed(scaled, applied_digests={})  # e.g. after a restart: applied once more
    assert [a.obj["kind"] for a in run(catalog, forgotten).applies] == ["PodMonitoring", "ScaledObject"]


def test_a_cache_another_deployment_created_is_joined_at_the_version_read(catalog):
    filling = settled(catalog, {"cache": {"type": "pvc"}})
    theirs = {key: merge(live, {"metadata": {"ownerReferences": [
        {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "name": "other", "uid": "uid-other"}]}})
        for key, live in filling.observed.shared.items()}  # fmt: skip
    intent = run(catalog, with_observed(filling, shared=theirs))
    assert [(c.how, c.obj["kind"]) for c in intent.claims] == [("join", "PersistentVolumeClaim"), ("join", "Job")]
    for claim in intent.claims:
        live = theirs[(claim.obj["kind"], claim.obj["metadata"]["name"])]
        assert claim.confirm_owner and claim.resource_version == live["metadata"]["resourceVersion"]
        assert [o["uid"] for o in claim.owners] == ["uid-other", UID]
    assert intent.cache_fill["state"] == "Filling" and not [a for a in intent.applies if a.obj["kind"] == "Deployment"]


def test_a_claim_to_expand_is_asked_at_the_version_read_and_nothing_else_is_done(catalog):
    filling = settled(catalog, {"cache": {"type": "pvc"}})
    claim, needed = cache_claim(filling)
    smaller = smaller_claim(filling)
    intent = run(catalog, smaller)
    (ask,) = intent.expands
    live = smaller.observed.shared[("PersistentVolumeClaim", claim)]
    assert (ask.claim, ask.storage, ask.resource_version) == (claim, needed, live["metadata"]["resourceVersion"])
    assert not (intent.claims or intent.prunes or intent.applies or intent.events or intent.status)
    # An answer about another size (the catalog changed again) is no answer: asked again.
    stale = with_observed(smaller, expansions={claim: ("2Gi", "refused")})
    assert [a.storage for a in run(catalog, stale).expands] == [needed]


def test_a_claim_too_small_says_by_how_much_and_what_to_do_and_the_deployment_waits(catalog):
    filling = settled(catalog, {"cache": {"type": "pvc"}})
    claim, needed = cache_claim(filling)
    refusal = f'persistentvolumeclaims "{claim}" is forbidden: the storageclass must support resize'
    world = with_observed(smaller_claim(filling, phase="Bound"), expansions={claim: (needed, refusal)})
    intent = run(catalog, world)
    cache = merge(world.resource["status"], intent.status)["cache"]
    assert cache["state"] == "TooSmall" and intent.cache_fill == cache
    assert f"{claim} requests 1Gi, but the checkpoint now needs {needed}" in cache["message"]
    assert "must support resize" in cache["message"] and "allowVolumeExpansion: true" in cache["message"]
    (event,) = intent.events
    assert (event.reason, event.message) == ("CacheClaimTooSmall", cache["message"])
    assert not [a for a in intent.applies if a.obj["kind"] == "Deployment"] and not intent.claims
    # Once it says so, the next reconcile writes and posts nothing more.
    again = dataclasses.replace(world, resource=resource({"cache": {"type": "pvc"}},
                                                         merge(world.resource["status"], intent.status)))
    assert summary(run(catalog, again), again) == expect()


def test_a_refusal_is_reported_in_status_and_an_event():
    intent = refused(resource(), "403 Forbidden: exceeded quota", 60, NOW)
    assert [(e.type, e.reason) for e in intent.events] == [("Warning", "ApplyFailed")]
    assert "exceeded quota" in intent.events[0].message and "every 60 s" in intent.events[0].message
    progressing = {c["type"]: c for c in intent.status["conditions"]}["Progressing"]
    assert progressing["message"] == "The operator retries applying the children every 60 s."
    assert intent.status["phase"] == "Degraded" and not intent.applies and intent.outcome == "ApplyFailed"


def test_what_the_shell_reads_is_decided_too():
    spec = {"autoscaling": AUTOSCALING, "hfTokenSecretRef": {"name": "hf", "key": "token"}}
    wants = decide_mod.wants(resource(spec), Settings(secret_check=True))
    assert wants.served and wants.secret == "hf" and ("HorizontalPodAutoscaler", "chat") in wants.children
    plain = decide_mod.wants(resource(spec), Settings())
    assert plain.secret is None  # the chart's switch is off: no Secret is ever read
    assert not decide_mod.wants(resource({}), Settings()).served


@pytest.mark.parametrize(("status", "wake"), [
    ({"phase": "NoFit"}, True),
    ({"phase": "Deploying", "selection": {"pool": "nvidia-l4-x1", "capacity": "scale-up"}}, True),
    ({"phase": "Ready", "selection": {"pool": "gone-pool"}}, True),
    ({"phase": "Ready", "selection": {"pool": "nvidia-l4-x1"}}, False),
])  # fmt: skip
def test_which_resources_node_pool_changes_wake(catalog, status, wake):
    pools = inventory.pools(node_list("gke-l4"), catalog)
    assert pools.by_name("nvidia-l4-x1") is not None
    assert decide_mod.replan_on_pools(resource({}, status), pools) is wake


def test_keda_hpa_wakes_the_gemma_deployment_its_scaled_object_is_named_after():
    keda_hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"ownerReferences": [
        {"kind": "ScaledObject", "name": "chat", "controller": True}]}}  # fmt: skip
    assert decide_mod.owners_to_wake(keda_hpa) == ["chat"]
    service = {"kind": "Service", "metadata": {"ownerReferences": [
        {"kind": "GemmaDeployment", "name": "chat", "controller": True},
        {"kind": "GemmaDeployment", "name": "shared", "controller": False}]}}  # fmt: skip
    assert decide_mod.owners_to_wake(service) == ["chat"]
    assert decide_mod.owners_to_wake({**service, "kind": "PersistentVolumeClaim"}) == ["chat", "shared"]


def test_the_intent_is_data():
    intent = refused(resource(), "x", 1, NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent.outcome = "Applied"  # type: ignore[misc]
    assert digest({"a": 1}) == digest({"a": 1}) != digest({"a": 2})


def _imports(module: str) -> set[str]:
    tree = ast.parse((pathlib.Path(decide_mod.__file__).parent / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:  # from . import x, from .x import y
            found |= {"." + node.module} if node.module else {"." + alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
    return found


def test_the_loop_modules_import_downwards_only_and_decide_does_no_io():
    """handlers -> resync -> queue -> execute -> decide: no cycle; decide has no kopf, asyncio or kube."""
    order = ["handlers", "resync", "queue", "execute", "decide"]
    for i, module in enumerate(order):
        local = {name.lstrip(".").split(".")[0] for name in _imports(module) if name.startswith(".")}
        assert not local & set(order[: i + 1]), f"{module} imports {local & set(order[:i + 1])}"
    assert not {"kopf", "asyncio", "aiohttp", ".kube"} & _imports("decide")


@pytest.mark.parametrize(("status", "generation", "waits"), [
    ({"observedGeneration": 1, "cache": {"state": "Filling"}}, 1, True),
    ({"observedGeneration": 1, "cache": {"state": "Failed"}}, 1, True),
    ({"observedGeneration": 1, "cache": {"state": "Ready"}}, 1, False),
    ({"observedGeneration": 1}, 1, False),
    (None, 1, True),  # its first status is not written yet: the Job it just created may be the one
    ({"observedGeneration": 1, "cache": {"state": "Ready"}}, 2, True),
])  # fmt: skip
def test_which_resources_a_retained_cache_object_wakes(status, generation, waits):
    assert decide_mod.waits_for_fill(resource({}, status, generation)) is waits


# ---------------------------------------------------------------------- the plan cache
SHARED_PLAN_SPECS = [
    {},
    {"objective": {"promptTokens": 512, "outputTokens": 128, "concurrency": 4}},  # selection.predicted: a dict
    {"autoscaling": AUTOSCALING, "cache": {"type": "pvc"}},
]


@pytest.mark.parametrize("spec", SHARED_PLAN_SPECS)
def test_a_cached_plan_is_not_changed_by_a_render_or_a_reconcile(catalog, spec):
    """The queue shares one Plan between every resource of one spec: render, the prediction,
    status and decide must leave it as the planner made it, and give what an uncached plan gives."""
    cache = planner.PlanCache()
    first = fresh(spec, served=frozenset() if "autoscaling" in spec else None)
    for world in (first, settled(catalog, spec)):  # a new resource; one with its status and children
        nodes = [node for fixture in world.nodes for node in node_list(fixture)]
        pools = inventory.pools(nodes, catalog, spec.get("nodeSelector"))
        parsed = GemmaDeploymentSpec.model_validate(spec)
        previous = decide_mod.previous_selection(world.resource)
        plan = cache.plan(parsed, pools, catalog, previous)
        assert isinstance(plan, planner.Plan)
        before = copy.deepcopy(plan)
        render.render(plan, NAME, NS, parsed, owner=world.resource)
        assert plan == before
        for _ in range(2):  # the second reconcile is served from the cache
            intent = decide(world.resource, world.observed, pools, catalog, Settings(), NOW, plan=cache.plan)
            assert plan == before
            assert cache.plan(parsed, pools, catalog, previous) is plan
            assert intent == decide(world.resource, world.observed, pools, catalog, Settings(), NOW)


def test_the_plan_cache_answers_only_for_the_inventory_it_planned_on(catalog):
    cache = planner.PlanCache()
    spec = GemmaDeploymentSpec.model_validate({})
    l4 = inventory.pools(node_list("gke-l4"), catalog)
    first = cache.plan(spec, l4, catalog)
    assert cache.plan(GemmaDeploymentSpec.model_validate({}), l4, catalog) is first  # an equal spec
    renewed = inventory.pools(node_list("gke-t4"), catalog)  # the nodes changed: a new inventory object
    assert cache.plan(spec, renewed, catalog).pool.accelerator == "nvidia-tesla-t4"
    assert cache.plan(spec, l4, catalog, previous=first.selection()) is not first  # another previous selection
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.plan(spec, l4, catalog) is not first
    assert planner.PlanCache(size=0).plan(spec, l4, catalog) == first


def test_without_the_gateway_crds_the_status_names_them(catalog):
    world = fresh({"gateway": {"parentRefs": [{"name": "g"}]}}, served=frozenset())
    written = merge(None, run(catalog, world).status)
    condition = next(c for c in written["conditions"] if c["type"] == "Gateway")
    assert condition["status"] == "False" and condition["reason"] == "CRDsNotServed"
    assert "InferencePool (inference.networking.k8s.io/v1)" in condition["message"]
    assert "HTTPRoute (gateway.networking.k8s.io/v1)" in condition["message"]
    assert written["endpoint"] == ENDPOINT


def test_an_attached_gateway_is_the_endpoint_when_it_reports_an_address(catalog):
    spec = {"gateway": {"parentRefs": [{"name": "g", "namespace": "gateways"}]}}
    assert decide_mod.wants(resource(spec), Settings()).gateway == ("gateways", "g")
    assert decide_mod.wants(resource(spec), Settings()).served
    live = {"spec": {"listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
            "status": {"addresses": [{"type": "IPAddress", "value": "10.128.0.9"}]}}
    world = fresh(spec, served=frozenset(GATEWAY_SERVED), gateway=live)
    written = merge(None, run(catalog, world).status)
    assert written["endpoint"] == "http://10.128.0.9/v1"
    assert any("endpoint picker routes by queue, KV-cache" in r for r in written["selection"]["reasons"])
    unaddressed = fresh(spec, served=frozenset(GATEWAY_SERVED))  # not readable, or no address yet
    assert merge(None, run(catalog, unaddressed).status)["endpoint"] == ENDPOINT


def _applied(intent: decide_mod.Intent) -> dict[tuple[str, str], dict[str, Any]]:
    return {(a.obj["kind"], a.obj["metadata"]["name"]): a.obj for a in intent.applies}


def test_a_gateway_over_adapters_routes_the_base_and_every_adapter(catalog):
    """gke-l4 with two LoRA adapters behind a Gateway: the pool, the picker and the route, the route's
    served models the base's and each adapter's, the picker reading vLLM's LoRA metric."""
    adapters = [{"name": "support-bot", "repo": "acme/support-lora", "rank": 32},
                {"name": "sql-writer", "repo": "acme/sql-lora"}]
    spec = {"model": {"family": "gemma3", "size": "1b"}, "adapters": adapters,
            "gateway": {"parentRefs": [{"name": "g", "namespace": "gateways"}]}}
    intent = run(catalog, fresh(spec, served=frozenset(GATEWAY_SERVED)))
    applied = _applied(intent)
    assert set(GATEWAY_KINDS) <= {kind for kind, _ in applied}
    assert applied[("InferencePool", NAME)]["spec"]["endpointPickerRef"]["name"] == f"{NAME}-epp"
    model_args = applied[("Deployment", NAME)]["spec"]["template"]["spec"]["containers"][0]["args"]
    served = model_args[model_args.index("--served-model-name") + 1]
    names = applied[("HTTPRoute", NAME)]["metadata"]["annotations"]["gemma.dev/served-models"].split(",")
    assert names == [served, "support-bot", "sql-writer"]
    assert "--lora-modules" in model_args
    epp_config = applied[("ConfigMap", f"{NAME}-epp")]["data"][gateway.CONFIG_FILE]
    assert gateway.engine_metrics(epp_config)["loraSpec"] == "vllm:lora_requests_info"
    written = merge(None, intent.status)
    assert next(c for c in written["conditions"] if c["type"] == "Gateway")["reason"] == "Attached"
    assert written["selection"]["adapters"] == ["support-bot", "sql-writer"]


def test_an_embedding_model_behind_a_gateway_is_routed_on_v1_embeddings(catalog):
    """Supported: the picker (v1.5.0) parses /v1/embeddings bodies (`input`) and reads the pooling
    runner's vllm:num_requests_* like a generating server's; the route's /v1 prefix covers it."""
    spec = {"model": {"task": "embed"}, "gateway": {"parentRefs": [{"name": "g", "namespace": "gateways"}]}}
    live = {"spec": {"listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
            "status": {"addresses": [{"type": "IPAddress", "value": "10.128.0.9"}]}}
    intent = run(catalog, fresh(spec, served=frozenset(GATEWAY_SERVED), gateway=live))
    assert intent.outcome == "Applied"
    assert set(GATEWAY_KINDS) <= {kind for kind, _ in _applied(intent)}
    assert merge(None, intent.status)["endpoint"] == "http://10.128.0.9/v1/embeddings"


def test_the_gateways_objects_without_a_watch_are_the_resyncs_to_repair(catalog):
    """Each unwatched gateway object is applied with a digest under its own key (gateway/Kind), which
    execute also keys memo.applied_unwatched by: the resync compares it and forgets that digest."""
    spec = {"gateway": {"parentRefs": [{"name": "g"}]}}
    intent = run(catalog, fresh(spec, served=frozenset(GATEWAY_SERVED)))
    keyed = {a.obj["kind"]: a.digest_key for a in intent.applies if a.digest is not None}
    assert keyed == {kind: f"gateway/{kind}" for kind in GATEWAY_KINDS if kind not in ("Deployment", "Service")}
    assert set(keyed.values()) == set(decide_mod.GATEWAY_DIGESTS) <= set(decide_mod.wants(resource(spec), Settings()).unwatched)


@pytest.mark.parametrize(("before", "after", "affected"), [
    (set(), {*gateway.REQUIRED}, ["gw"]),  # the CRDs installed later: CRDsNotServed -> Attached
    ({*gateway.REQUIRED}, {gateway.INFERENCE_POOL}, ["gw"]),  # one removed
    ({*gateway.REQUIRED}, {*gateway.REQUIRED, gateway.GATEWAY}, ["gw"]),  # the Gateway kind: its address
    (set(), {("keda.sh/v1alpha1", "ScaledObject")}, []),  # not a gateway kind
    ({*gateway.REQUIRED}, {*gateway.REQUIRED}, []),
])  # fmt: skip
def test_a_discovery_change_requeues_the_resources_behind_a_gateway(before, after, affected):
    specs = {"gw": {"gateway": {"parentRefs": [{"name": "g"}]}}, "plain": {}, "none": None}
    assert gateway.affected_by_discovery(specs, before, after) == affected


def test_the_adapters_fill_says_which_it_waits_for_and_a_refusal_names_the_adapter_and_field(rows, catalog):
    filling, _, _ = rows["adapters-filling"]
    message = run(catalog, filling).cache_fill["message"]
    assert "support-bot, sql-writer once" in message and condition_of(catalog, filling, "Progressing") == message
    refused_world, _, _ = rows["adapters-refused"]
    intent = run(catalog, refused_world)
    # Both adapter Jobs refused: the first in spec order is named, with the field to set.
    assert intent.cache_fill["state"] == "Failed"
    assert intent.cache_fill["message"].startswith("Adapter support-bot (spec.adapters[0], acme/support-lora) was refused")
    assert "Set spec.adapters[0].rank to its rank" in intent.cache_fill["message"]
    assert not [a for a in intent.applies if a.obj["kind"] == "Deployment"]  # nothing half-applied
    added, _, _ = rows["adapter-added-filled"]
    (rolling,) = [e.message for e in run(catalog, added).events if e.reason == "RollingOut"]
    assert "faq-bot=/models/huggingface/hub/adapters/faq-lora-" in rolling


def condition_of(catalog, world: World, kind: str) -> str:
    written = merge(world.resource.get("status"), run(catalog, world).status)
    return next(c["message"] for c in written["conditions"] if c["type"] == kind)


# ------------------------------------------------------------- chat template from a ConfigMap
def test_the_shell_reads_the_config_map_a_chat_template_names_by_name():
    assert decide_mod.wants(resource(TEMPLATE_SPEC), Settings()).config_map == "templates"
    assert decide_mod.wants(resource({"chatTemplate": {"inline": GOOD}}), Settings()).config_map is None


def test_a_config_map_template_is_mounted_with_the_digest_of_its_key_on_the_pod_template(catalog):
    intent = run(catalog, fresh(TEMPLATE_SPEC, config_map=templates(**{"chat.jinja": GOOD}, other="x")))
    deployment = next(a.obj for a in intent.applies if a.obj["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][chat_template.DIGEST] == chat_template.content_digest(GOOD)
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == chat_template.VOLUME)
    assert volume["configMap"] == {"name": "templates", "items": [{"key": "chat.jinja", "path": chat_template.FILE}]}
    args = template["spec"]["containers"][0]["args"]
    assert args[args.index("--chat-template") + 1] == f"{chat_template.MOUNT_DIR}/{chat_template.FILE}"


def test_an_edited_template_rolls_out_with_an_event_naming_the_config_map_and_key(catalog):
    deployed = _settle(catalog, ready(settled(catalog, TEMPLATE_SPEC, config_map=templates(**{"chat.jinja": GOOD}))))
    intent = run(catalog, with_observed(deployed, config_map=templates(**{"chat.jinja": EDITED})))
    (event,) = [e for e in intent.events if e.reason == "RollingOut"]
    assert event.message == ("Replacing the model pods; first change: chat template from ConfigMap templates key "
                             "chat.jinja changed.")
    (apply,) = intent.applies
    assert apply.obj["spec"]["template"]["metadata"]["annotations"][chat_template.DIGEST] == \
        chat_template.content_digest(EDITED)


def test_a_refused_template_names_the_config_map_key_and_line_and_applies_nothing(catalog):
    deployed = _settle(catalog, ready(settled(catalog, TEMPLATE_SPEC, config_map=templates(**{"chat.jinja": GOOD}))))
    intent = run(catalog, with_observed(deployed, config_map=templates(**{"chat.jinja": BROKEN})))
    assert not intent.applies and not intent.prunes and not intent.claims
    message = intent.events[0].message
    assert message.startswith("Invalid spec: spec.chatTemplate.configMapRef: ConfigMap templates, key chat.jinja: "
                              "line 2: unexpected '}'.")
    assert "keep the template they started with" in message
    # The selection and endpoint of the model still serving stay in status (left out of the patch).
    assert "selection" not in intent.status and "endpoint" not in intent.status
    missing = run(catalog, fresh(TEMPLATE_SPEC, config_map=templates(other=GOOD)))
    assert "ConfigMap 'templates' (spec.chatTemplate.configMapRef) has no key 'chat.jinja' (its keys: other)" in \
        missing.events[0].message


def test_a_refused_template_keeps_the_serving_selection_sticky(catalog):
    """A typo in the ConfigMap must not move a serving model: fixed, it stays on its pool although a
    bigger one appeared meanwhile (a new spec would re-plan)."""
    deployed = _settle(catalog, ready(settled(catalog, TEMPLATE_SPEC, config_map=templates(**{"chat.jinja": GOOD}))))
    refused_ = _settle(catalog, with_observed(deployed, config_map=templates(**{"chat.jinja": BROKEN})))
    assert refused_.resource["status"]["phase"] == "Invalid"
    fixed = dataclasses.replace(with_observed(refused_, config_map=templates(**{"chat.jinja": GOOD})),
                                nodes=("gke-l4", "gke-h100x8"))  # fmt: skip  (planned afresh: the H100)
    intent = run(catalog, fixed)
    assert not intent.applies and summary(intent, fixed)["status"] == ("Ready", "ReplicasReady")


def test_pods_of_an_earlier_release_roll_once_to_the_config_maps_template(catalog):
    """An earlier release never read the ConfigMap (no digest on the pod template), so its pods may run any
    older content: the first reconcile rolls them once, saying so; then an unchanged ConfigMap restarts nothing."""
    earlier = _settle(catalog, ready(settled(catalog, TEMPLATE_SPEC)))  # config_map not read: no digest
    assert chat_template.DIGEST not in (earlier.observed.children[("Deployment", NAME)]["spec"]["template"]
                                        ["metadata"].get("annotations") or {})  # fmt: skip
    intent = run(catalog, with_observed(earlier, config_map=templates(**{"chat.jinja": GOOD})))
    assert [a.obj["kind"] for a in intent.applies] == ["Deployment"]
    (event,) = [e for e in intent.events if e.reason == "RollingOut"]
    assert "chat template from ConfigMap templates key chat.jinja, not tracked on the running pods yet" in event.message
