"""Rendered children: golden files, real Kubernetes schemas (strict), and the properties every pod must keep."""

from __future__ import annotations

import os
import pathlib

import kubernetes_validate
import pytest
import yaml

from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import InvalidSpec, Plan, plan
from gemma_operator.render import endpoint, render
from gemma_operator.runtimes import HOME_SIZE
from tests.conftest import NODES, node_list

GOLDEN = pathlib.Path(__file__).parent / "golden"
# GKE's regular channel runs 1.33 (the fixtures' kubelets); validate against it.
KUBE_VERSION = "1.33.0"
OWNER = {"metadata": {"name": "chat", "namespace": "team-a", "uid": "3f1c2a9e-0000-4000-8000-000000000001"}}

ADAPTERS = [
    {"name": "support-bot", "repo": "acme/gemma-3-1b-support-lora", "rank": 32, "baseModel": "google/gemma-3-1b-it",
     "gguf": "support-lora-f16.gguf"},
    {"name": "sql-writer", "repo": "acme/gemma-3-1b-sql-lora", "revision": "v2", "gguf": "gguf/sql-lora-f16.gguf"},
]
CASES = {
    "cpu-default": ("gke-cpu-only", {}),
    "l4-default": ("gke-l4", {}),
    "t4-gemma3-llamacpp-cuda": ("gke-t4", {"model": {"family": "gemma3"}}),
    "h100-largest-tp2": ("gke-h100x8", {"model": {"sizePolicy": "largest"}}),
    "tpu-v5e-default": ("gke-tpu-v5e-2x2", {}),
    "a10g-gfd-fp8": ("gfd-a10g", {"quantization": "fp8"}),
    # Embedding models: llama.cpp on the cheapest pool (a CPU node), vLLM's pooling runner when asked onto a GPU.
    "cpu-embed": ("gke-cpu-only", {"model": {"task": "embed"}}),
    "l4-embed-vllm": ("gke-l4", {"model": {"task": "embed"}, "accelerator": "nvidia-l4"}),
    # LoRA adapters (issue 19): vLLM's --lora-modules on an L4, llama.cpp's --lora on CPU; one rank known, one not.
    "l4-two-adapters": ("gke-l4", {"model": {"family": "gemma3", "size": "1b"}, "adapters": ADAPTERS}),
    "cpu-two-adapters": ("gke-cpu-only", {"model": {"family": "gemma3", "size": "1b"}, "adapters": ADAPTERS}),
    # ...with a shared store: one Job per adapter fills it, the pods mount it read-only (no init containers).
    "l4-two-adapters-pvc": ("gke-l4", {"model": {"family": "gemma3", "size": "1b"}, "adapters": ADAPTERS,
                                       "cache": {"type": "pvc"}}),
    "cpu-two-adapters-gcsfuse": ("gke-cpu-only", {"model": {"family": "gemma3", "size": "1b"}, "adapters": ADAPTERS,
                                                  "cache": {"type": "gcsfuse", "bucket": "team-models"}}),
    "l4-everything-set": (
        "gke-l4",
        {
            "model": {"family": "gemma3", "size": "4b"},
            "replicas": 2,
            "maxModelLen": 16384,
            "hfTokenSecretRef": {"name": "hf", "key": "token"},
            "extraArgs": ["--enable-prefix-caching"],
            "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
            "resources": {"requests": {"cpu": "6", "ephemeral-storage": "50Gi"}},
            "nodeSelector": {"cloud.google.com/gke-nodepool": "l4-pool"},
            "tolerations": [{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "service": {"type": "LoadBalancer", "port": 80},
        },
    ),
}


def rendered(catalog, fixture: str, spec: dict, owner=OWNER) -> list[dict]:
    parsed = GemmaDeploymentSpec.model_validate(spec)
    result = plan(parsed, pools(node_list(fixture), catalog, parsed.node_selector), catalog)
    return render(result, "chat", "team-a", parsed, owner)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(catalog, case):
    fixture, spec = CASES[case]
    text = yaml.safe_dump_all(rendered(catalog, fixture, spec), sort_keys=False)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing {path}; run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(), f"{case} drifted from {path}; review, then UPDATE_GOLDEN=1 to accept"


@pytest.mark.parametrize("case", sorted(CASES))
def test_valid_against_kubernetes_schemas_strict(catalog, case):
    for obj in rendered(catalog, *CASES[case]):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_strict_validation_does_catch_unknown_fields(catalog):
    deployment, *_ = rendered(catalog, *CASES["l4-default"])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def _pod(objs: list[dict]) -> dict:
    return objs[0]["spec"]["template"]["spec"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_pod_keeps_the_invariants(catalog, case):
    objs = {o["kind"]: o for o in rendered(catalog, *CASES[case]) if o["kind"] in ("Deployment", "Service")}
    deployment, service = objs["Deployment"], objs["Service"]  # after the cache objects, when there are any
    pod = _pod([deployment])
    (container,) = pod["containers"]
    assert all(isinstance(a, str) for a in container["args"])
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= container.keys()
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": pod["volumes"][1]["emptyDir"]["sizeLimit"]}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    for obj in (deployment, service):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["controller"] is True and ref["uid"] == OWNER["metadata"]["uid"] and ref["kind"] == "GemmaDeployment"
    assert not any("sh" == c or c.endswith("/sh") for c in container["command"])


def test_accelerator_requests_and_scheduling(catalog):
    pod = _pod(rendered(catalog, *CASES["tpu-v5e-default"]))
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["google.com/tpu"] == "4"
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "2x2",
    }
    assert {"key": "google.com/tpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in pod["tolerations"]
    deployment = rendered(catalog, *CASES["h100-largest-tp2"])[0]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_llamacpp_cuda_offloads_every_layer_and_cpu_sets_threads(catalog):
    cuda = _pod(rendered(catalog, *CASES["t4-gemma3-llamacpp-cuda"]))["containers"][0]
    assert cuda["image"].startswith("ghcr.io/ggml-org/llama.cpp:server-cuda-")
    assert cuda["args"][cuda["args"].index("--n-gpu-layers") + 1] == "999"
    assert "--jinja" in cuda["args"]
    cpu = _pod(rendered(catalog, *CASES["cpu-default"]))["containers"][0]
    assert "--threads" in cpu["args"] and "--n-gpu-layers" not in cpu["args"]
    assert cpu["args"][:4] == ["--hf-repo", "google/gemma-4-E2B-it-qat-q4_0-gguf", "--hf-file", "gemma-4-E2B_q4_0-it.gguf"]


def test_hf_token_comes_from_the_secret_never_a_literal(catalog):
    (container,) = _pod(rendered(catalog, *CASES["l4-everything-set"]))["containers"]
    token = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
    assert token == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]


def test_user_extras_are_merged(catalog):
    deployment, service, *_ = rendered(catalog, *CASES["l4-everything-set"])
    pod = _pod([deployment])
    (container,) = pod["containers"]
    assert container["args"][-1] == "--enable-prefix-caching"
    assert container["resources"]["requests"]["cpu"] == "6"
    assert container["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4", "cloud.google.com/gke-nodepool": "l4-pool"}
    assert len(pod["tolerations"]) == 2
    assert deployment["spec"]["replicas"] == 2
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["ports"][0]["port"] == 80


def test_endpoint(catalog):
    spec = GemmaDeploymentSpec.model_validate({"service": {"port": 80}})
    assert endpoint("chat", "team-a", spec) == "http://chat.team-a.svc.cluster.local:80/v1"


HOSTILE = [
    "x\nkind: Secret",
    "{{ .Values }}",
    '"; rm -rf / #',
    "a: [b, {c: d}]",
    "$(cat /etc/passwd)",
    "--port=1",
    "\u2028\u0000",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_stay_in_their_field(catalog, value):
    spec = {"env": [{"name": "NOTE", "value": value}], "nodeSelector": {"team": "x"}}
    baseline = rendered(catalog, "gke-l4", {"env": [{"name": "NOTE", "value": "plain"}]})
    parsed = GemmaDeploymentSpec.model_validate(spec)
    objs = render(plan(parsed, pools(node_list("gke-l4"), catalog), catalog), "chat", "team-a", parsed, OWNER)
    env = objs[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "NOTE", "value": value} in env
    # Round-tripping through YAML gives back exactly the same objects: nothing was spliced into text.
    assert list(yaml.safe_load_all(yaml.safe_dump_all(objs))) == objs
    assert [o["kind"] for o in objs] == [o["kind"] for o in baseline]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"extraArgs": ["--max-model-len=999999"]}, "spec.extraArgs"),
        ({"extraArgs": ["--port", "9000"]}, "spec.extraArgs"),
        ({"extraArgs": ["--served-model-name=evil"]}, "spec.extraArgs"),
        ({"runtime": "llamacpp", "extraArgs": ["-c", "100"]}, "spec.extraArgs"),
        # What vLLM's argparse reads as a flag the plan owns (checked with vLLM 0.32.0's parser).
        ({"extraArgs": ["--max_model_len=5"]}, "spec.extraArgs"),
        ({"extraArgs": ["--max-model", "5"]}, "spec.extraArgs"),
        ({"extraArgs": ["--served", "evil"]}, "spec.extraArgs"),
        ({"extraArgs": ["-qfp8"]}, "spec.extraArgs"),
        ({"extraArgs": ["-t", "2"]}, "spec.extraArgs"),
        ({"resources": {"limits": {"nvidia.com/gpu": "4"}}}, "spec.resources"),
        # env is keyed by name: a second HF_HOME (or HOME) would make the apply itself fail.
        ({"env": [{"name": "HF_HOME", "value": "/tmp"}]}, "spec.env"),
        ({"env": [{"name": "HOME", "value": "/root"}]}, "spec.env"),
        ({"runtime": "llamacpp", "env": [{"name": "LLAMA_CACHE", "value": "/x"}]}, "spec.env"),
        ({"hfTokenSecretRef": {"name": "hf"}, "env": [{"name": "HF_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": "other", "key": "token"}}}]}, "spec.env"),
    ],
)
def test_overrides_of_what_the_plan_owns_are_refused(catalog, spec, field):
    with pytest.raises(InvalidSpec) as info:
        rendered(catalog, "gke-l4", spec)
    assert info.value.field == field


@pytest.mark.parametrize("name", ["Chat", "1chat", "chat.v2", "a" * 64])
def test_names_that_cannot_name_a_service_are_refused(catalog, name):
    parsed = GemmaDeploymentSpec.model_validate({})
    result = plan(parsed, pools(node_list("gke-l4"), catalog), catalog)
    with pytest.raises(InvalidSpec) as info:
        render(result, name, "default", parsed)
    assert info.value.field == "metadata.name"


# Pod Security Standards, the checks that apply to what the operator renders
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
def baseline_violations(pod: dict) -> list[str]:
    out = []
    if any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        out.append("host namespaces")
    if any("hostPath" in v for v in pod.get("volumes", [])):
        out.append("hostPath volume")
    for c in pod["containers"]:
        context = c.get("securityContext") or {}
        if context.get("privileged"):
            out.append("privileged")
        if set((context.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append("added capabilities")
        if any("hostPort" in p for p in c.get("ports", [])):
            out.append("hostPort")
    return out


def restricted_violations(pod: dict) -> list[str]:
    out = baseline_violations(pod)
    pod_context = pod.get("securityContext") or {}
    for c in pod["containers"]:
        context = c.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            out.append("allowPrivilegeEscalation")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            out.append("capabilities not dropped")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            out.append("runAsNonRoot")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            out.append("runAsUser 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile")) or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            out.append("seccomp")
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
    out += [f"volume {v['name']}" for v in pod.get("volumes", []) if not set(v) - {"name"} <= allowed]
    return out


@pytest.mark.parametrize("fixture", sorted(p.stem for p in NODES.glob("*.yaml")))
def test_model_server_pods_are_restricted_where_the_image_allows(catalog, fixture):
    parsed = GemmaDeploymentSpec.model_validate({})
    result = plan(parsed, pools(node_list(fixture), catalog), catalog)
    assert isinstance(result, Plan), result
    pod = _pod(render(result, "chat", "team-a", parsed, OWNER))
    (container,) = pod["containers"]
    image = catalog.images[result.image_key]
    assert not baseline_violations(pod)
    if image.run_as is None:
        # The documented exception (catalog root_reason): the image's root user, Pod Security baseline.
        assert image.root_reason
        assert {"runAsNonRoot", "runAsUser"}.isdisjoint(pod["securityContext"])
        assert restricted_violations(pod) == ["runAsNonRoot"]
        return
    assert restricted_violations(pod) == []
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (image.run_as.user, image.run_as.group)
    assert {"name": "HOME", "value": "/home/gemma"} in container["env"]
    assert {"name": "home", "mountPath": "/home/gemma"} in container["volumeMounts"]
    assert {"name": "home", "emptyDir": {"sizeLimit": HOME_SIZE[result.runtime]}} in pod["volumes"]  # bounded


def test_tpu_pods_are_the_only_root_exception(catalog):
    roots = {key for key, image in catalog.images.items() if image.run_as is None}
    assert roots == {"vllm-tpu"}


def test_the_refusal_names_the_flag_as_the_server_reads_it(catalog):
    with pytest.raises(InvalidSpec, match=r"--max-model-len \(as --max_model_len\) is set by the plan"):
        rendered(catalog, "gke-l4", {"extraArgs": ["--max_model_len=5"]})
    # Flags the plan does not own pass, in any spelling.
    objs = rendered(catalog, "gke-l4", {"extraArgs": ["--max_num_seqs=8", "--enable-prefix-caching", "-O3"]})
    assert _pod(objs)["containers"][0]["args"][-3:] == ["--max_num_seqs=8", "--enable-prefix-caching", "-O3"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_progress_deadline_covers_the_start_up_budget(catalog, case):
    """Kubernetes' default (600 s) fires during a normal first start of a large model; the
    Deployment's deadline is the startup probe's whole budget plus time to schedule and pull."""
    deployment = next(o for o in rendered(catalog, *CASES[case]) if o["kind"] == "Deployment")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert deployment["spec"]["progressDeadlineSeconds"] >= budget + 600


def test_the_longest_budgets_of_the_issue_are_covered(catalog):
    deadlines = {case: rendered(catalog, *CASES[case])[0]["spec"]["progressDeadlineSeconds"]
                 for case in ("tpu-v5e-default", "h100-largest-tp2")}  # fmt: skip
    assert all(deadline > 600 + 600 for deadline in deadlines.values()), deadlines
