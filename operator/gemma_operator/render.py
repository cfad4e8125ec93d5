"""Plan + GemmaDeployment -> the child manifests (Deployment, Service), built as data. Pure.

No user string is ever spliced into YAML or shell text: every value lands in a dict
field, and the server's arguments are an argv list (no `sh -c`).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from . import cache as cache_mod
from . import adapters as adapters_mod
from . import flags, scaling
from .api.v1alpha1 import API_VERSION, KIND, CacheSpec, GemmaDeploymentSpec
from .planner import InvalidSpec, Plan
from .runtimes import (HOME_DIR, HOME_SIZE, PORT_NAME, PROBE_PERIOD_S, Server, container_security_context, disk_request,
                       home_volume, llamacpp, progress_deadline_seconds, startup_seconds, vllm)  # fmt: skip

MANAGER = "gemma-operator"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

# Flags the plan owns: a user repeating them in extraArgs would silently contradict the plan.
OWNED_FLAGS = {
    "vllm": ("--model", "--served-model-name", "--host", "--port", "--dtype", "--max-model-len",
             "--tensor-parallel-size", "-tp", "--quantization", "-q", "--gpu-memory-utilization",
             "--limit-mm-per-prompt", "--language-model-only", "--chat-template"),
    "llamacpp": ("-m", "--model", "-hf", "-hfr", "--hf-repo", "-hff", "--hf-file", "-a", "--alias", "--host",
                 "--port", "-c", "--ctx-size", "-ngl", "--gpu-layers", "--n-gpu-layers", "-t", "--threads",
                 "-mm", "--mmproj", "-mmu", "--mmproj-url", "--mmproj-auto", "--no-mmproj", "--no-mmproj-auto",
                 "--chat-template", "--chat-template-file"),
}  # fmt: skip
# ...and those an embedding plan sets besides (the pooling runner, its batch, the Matryoshka sizes).
EMBED_OWNED_FLAGS = {
    "vllm": ("--runner", "--convert", "--max-num-batched-tokens", "--hf-overrides"),
    "llamacpp": ("--embedding", "--embeddings", "--pooling", "-b", "--batch-size", "-ub", "--ubatch-size"),
}


# ...and those spec.adapters sets (LoRA).
ADAPTER_OWNED_FLAGS = {
    "vllm": ("--enable-lora", "--lora-modules", "--max-loras", "--max-lora-rank"),
    "llamacpp": ("--lora", "--lora-scaled", "--lora-init-without-apply"),
}
# The adapters' download: small files, streamed to disk.
ADAPTER_LOADER_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}


def selector_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "gemma-server", "app.kubernetes.io/instance": name}


def labels(name: str, plan: Plan) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": MANAGER,
        "gemma.dev/runtime": plan.runtime,
        "gemma.dev/accelerator": plan.pool.accelerator,
    }


# The Service names the API an embedding model serves (chat Services carry no annotation).
API_PATH_ANNOTATION = "gemma.dev/api-path"
EMBEDDINGS_PATH = "/v1/embeddings"


def endpoint(name: str, namespace: str, spec: GemmaDeploymentSpec) -> str:
    """status.endpoint: the OpenAI-compatible base URL; for an embedding model, its /v1/embeddings URL."""
    path = EMBEDDINGS_PATH if spec.model.task == "embed" else "/v1"
    return f"http://{name}.{namespace}.svc.cluster.local:{spec.service.port}{path}"


def example_request(url: str, plan: Plan) -> str | None:
    """A request a user can paste (from a pod in the cluster, or through `kubectl port-forward`): for an
    embedding model, a query with the task prefix its model card asks for. None for chat plans."""
    if plan.task != "embed":
        return None
    body = json.dumps({"model": plan.served_model_name, "input": ["task: search result | query: what is Gemma?"]})
    return f"curl -s {shlex.quote(url)} -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def owner_reference(owner: dict[str, Any], controller: bool = True) -> dict[str, Any]:
    """The GemmaDeployment as owner: deleting it garbage-collects the children. A shared cache object
    has several owners and no controller, so garbage collection deletes it with the last."""
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def check(name: str, spec: GemmaDeploymentSpec, plan: Plan) -> None:
    """Refuse what the schema can't: a name unfit for a Service, extraArgs that fight the plan."""
    if not DNS_LABEL.match(name):
        raise InvalidSpec(
            "metadata.name",
            f"{name!r} must be a DNS-1035 label (lowercase letters, digits, '-', at most 63) because it names the Service",
        )
    # vLLM's argparse also reads `--max_model_len`, `--max-model` and `-qfp8` as flags it owns.
    reads_as = flags.argparse_names if plan.runtime == "vllm" else flags.exact_names
    owned = OWNED_FLAGS[plan.runtime] + (EMBED_OWNED_FLAGS[plan.runtime] if plan.task == "embed" else ())
    owned += ADAPTER_OWNED_FLAGS[plan.runtime] if plan.adapters else ()
    for arg in spec.extra_args:
        flag = next((f for f in owned if reads_as(arg, f)), None)
        if flag:
            written = arg.split("=", 1)[0]
            spelled = "" if written == flag else f" (as {written})"
            raise InvalidSpec("extraArgs", f"{flag}{spelled} is set by the plan; use the matching spec field instead")
    for res in (spec.resources.requests or {}, spec.resources.limits or {}) if spec.resources else ():
        if plan.pool.resource_name and plan.pool.resource_name in res:
            raise InvalidSpec("resources", f"{plan.pool.resource_name} is set by the plan (accelerator and parallelism)")


def _merge_resources(planned: dict[str, Any], spec: GemmaDeploymentSpec) -> dict[str, Any]:
    if not spec.resources:
        return planned
    merged = {k: dict(v) for k, v in planned.items()}
    for part in ("requests", "limits"):
        for key, value in (getattr(spec.resources, part) or {}).items():
            merged.setdefault(part, {})[key] = str(value)
    return merged


def _tolerations(plan: Plan, spec: GemmaDeploymentSpec) -> list[dict[str, Any]]:
    result = [dict(t) for t in plan.pool.tolerations]
    for toleration in spec.tolerations:
        extra = toleration.model_dump(by_alias=True, exclude_none=True)
        if extra not in result:
            result.append(extra)
    return result


def server(plan: Plan, spec: GemmaDeploymentSpec, adapter_store: str | None = None) -> Server:
    runtime = vllm if plan.runtime == "vllm" else llamacpp
    return runtime.server(plan, spec, plan.image, adapter_store)  # spec.image, when set, is already the plan's


def pod_security_context(plan: Plan) -> dict[str, Any]:
    """Pod Security "restricted" where the image has a non-root user that works (catalog
    `run_as`); otherwise the image's root user, still with seccomp, no escalation, no capabilities."""
    context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if plan.run_as:
        user, group = plan.run_as
        context.update(runAsNonRoot=True, runAsUser=user, runAsGroup=group)
    return context


def deployment(name: str, namespace: str, spec: GemmaDeploymentSpec, plan: Plan,
               cache: cache_mod.Cache | None = None) -> dict[str, Any]:  # fmt: skip
    cache = cache or cache_mod.plan_cache(plan, spec)
    # A filled cache holds the adapters (its Jobs fill them); the emptyDir, each pod's init containers.
    srv = server(plan, spec, cache_mod.HUB_DIR[plan.runtime] if cache.filled else None)
    srv.container["securityContext"] = container_security_context()
    if plan.run_as:
        home, home_mount = home_volume(HOME_SIZE[plan.runtime])
        srv.volumes.append(home)
        srv.container["volumeMounts"].append(home_mount)
        srv.container["env"].insert(0, {"name": "HOME", "value": HOME_DIR})
    owned = [var["name"] for var in srv.container["env"]][: len(srv.container["env"]) - len(spec.env)]
    for var in spec.env:
        if var.name in owned:
            # Two entries with one name: a real API server refuses the apply (env is keyed by name).
            raise InvalidSpec("env", f"{var.name} is set by the operator for this plan ({', '.join(owned)})")
    pod_spec: dict[str, Any] = {
        "containers": [srv.container],
        "volumes": srv.volumes,
        "nodeSelector": plan.node_selector,  # the pool's and spec.nodeSelector, as status.selection says
        "automountServiceAccountToken": False,
        # Service links inject *_PORT variables; one named like the runtime's own settings breaks it.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security_context(plan),
    }
    tolerations = _tolerations(plan, spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    pod_meta: dict[str, Any] = {"labels": labels(name, plan)}
    cache_mod.apply_to_pod(cache, plan, pod_spec, pod_meta)
    if plan.adapters and not cache.filled:
        pod_spec["initContainers"] = adapter_loaders(plan, srv.container)
    disk = disk_request(pod_spec["volumes"])  # every disk-backed emptyDir, so the scheduler counts them
    if disk:
        srv.container["resources"].setdefault("requests", {})["ephemeral-storage"] = disk
    srv.container["resources"] = _merge_resources(srv.container["resources"], spec)  # the user's last
    # A filled claim is read, not downloaded: the start-up budget leaves out the download.
    download = cache.type != "pvc"
    srv.container["startupProbe"]["failureThreshold"] = startup_seconds(plan, download) // PROBE_PERIOD_S
    result = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name, plan)},
        "spec": {
            "replicas": scaling.deployment_replicas(spec),
            "progressDeadlineSeconds": progress_deadline_seconds(plan, download),
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": scaling.strategy(spec, plan),
            "template": {"metadata": pod_meta, "spec": pod_spec},
        },
    }
    if result["spec"]["replicas"] is None:  # the autoscaler's field: not sent, not owned
        del result["spec"]["replicas"]
    return result


def adapter_loaders(plan: Plan, server_container: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers that download spec.adapters into the pod's /models/adapters (the emptyDir cache)
    before the server starts, in the server's image, with its env and its mounts. vLLM's checks each
    adapter_config.json against the plan's rank and base."""
    if plan.runtime == "vllm":
        commands = [adapters_mod.vllm_download_command(plan.adapters, tuple(dict.fromkeys((plan.base_id, plan.model_id))))]
    else:
        commands = adapters_mod.llamacpp_download_commands(plan.adapters)
    env_vars = server_container["env"]
    mounts = [m for m in server_container["volumeMounts"] if not m.get("readOnly") and m["name"] != "dshm"]
    # vLLM: one container for all; llama.cpp: one curl each, named for its adapter (a DNS label).
    names = ["adapters"] if plan.runtime == "vllm" else \
        [re.sub(r"[^a-z0-9-]", "-", f"adapter-{a.name.lower()}")[:58].rstrip("-") for a in plan.adapters]  # fmt: skip
    names = [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]  # A.b and a_b
    return [{
        "name": name,
        "image": server_container["image"],
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [dict(v) for v in env_vars],
        "resources": {part: dict(values) for part, values in ADAPTER_LOADER_RESOURCES.items()},
        "volumeMounts": [dict(m) for m in mounts],
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    } for name, command in zip(names, commands, strict=True)]  # fmt: skip


def service(name: str, namespace: str, spec: GemmaDeploymentSpec, plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name, plan),
                     **({"annotations": {API_PATH_ANNOTATION: EMBEDDINGS_PATH}} if plan.task == "embed" else {})},
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(name),
            "ports": [{"name": PORT_NAME, "port": spec.service.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def optional_children(name: str, namespace: str, spec: GemmaDeploymentSpec, plan: Plan,
                      choice: scaling.Choice) -> list[dict[str, Any] | None]:  # fmt: skip
    """The children that exist only in some specs; None where one must not exist."""
    own, select = labels(name, plan), selector_labels(name)
    return [
        scaling.pod_disruption_budget(name, namespace, spec, own, select),
        scaling.pod_monitoring(name, namespace, spec, choice, own, select),
        scaling.service_monitor(name, namespace, spec, choice, own, select),
        scaling.horizontal_pod_autoscaler(name, namespace, spec, plan, choice, own),
        scaling.scaled_object(name, namespace, spec, plan, choice, own, select),
    ]


def render(plan: Plan, name: str, namespace: str, spec: GemmaDeploymentSpec,
           owner: dict[str, Any] | None = None, choice: scaling.Choice | None = None,
           cache_defaults: CacheSpec | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The children to apply, in apply order: the cache objects (shared claim, loader Job) first.
    With `owner` (the CR, with its uid), the Deployment, Service and optional children are
    controlled by it, and the cache objects (retention Delete) owned by it among others.

    `choice` resolves autoscaling against what the cluster serves; without it, `scaling.choose`
    with nothing served (an HPA and a PodMonitoring). Kinds of `scaling.OPTIONAL_KINDS` missing
    from the result must not exist.
    """
    check(name, spec, plan)
    scaling.signal(spec, plan)  # refuse a metric the engine lacks before anything else
    choice = choice or scaling.choose(spec, set())
    cache = cache_mod.plan_cache(plan, spec, cache_defaults)
    objects = [deployment(name, namespace, spec, plan, cache), service(name, namespace, spec, plan)]
    objects += [obj for obj in optional_children(name, namespace, spec, plan, choice) if obj is not None]
    if owner is not None:
        for obj in objects:
            obj["metadata"]["ownerReferences"] = [owner_reference(owner)]
    shared_ref = owner_reference(owner, controller=False) if owner is not None else None
    shared = cache_mod.objects(cache, plan, spec, namespace, _tolerations(plan, spec), pod_security_context(plan),
                               shared_ref)  # fmt: skip
    return shared + objects
