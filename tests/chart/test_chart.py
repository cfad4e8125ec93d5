"""The Helm chart: lint, schema, rendered objects valid for Kubernetes, least-privilege RBAC, restricted pods."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .chart_files import CHART, CI_VALUES, NAMESPACE, RELEASE, ROOT, values as merged_values

CI = {path.name.split("-")[1]: path for path in CI_VALUES}  # default, namespaced, gke, lint
SA = f"{RELEASE}-gemma-operator"
IDS = [path.name for path in CI_VALUES]

# Kinds defined by CRDs that kubernetes-validate has no schema for. They are checked
# here by hand (test_crd_kinds_are_well_formed) instead of being validated.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),  # Prometheus Operator
    ("monitoring.googleapis.com/v1", "PodMonitoring"),  # GKE Managed Service for Prometheus
    ("kopf.dev/v1", "ClusterKopfPeering"),  # kopf peering (leader election)
    ("kopf.dev/v1", "KopfPeering"),
}


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = of_kind(objects, kind)
    return found


def rules(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, namespace, rule) of every rule in every Role and ClusterRole."""
    for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role"):
        for rule in role["rules"]:
            yield role["kind"], role["metadata"].get("namespace", ""), rule


def grants(objects: list[dict[str, Any]], where: str | None = None) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) granted by Roles in namespace `where`, or by ClusterRoles when None."""
    out = set()
    for kind, namespace, rule in rules(objects):
        if (where is None and kind == "ClusterRole") or (kind == "Role" and namespace == where):
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


# --- helm lint, schema -----------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=IDS)
def test_helm_lint_strict(helm, values):
    done = helm("lint", "--strict", str(CHART), "--values", str(values))
    assert "0 chart(s) failed" in done.stdout


def test_ci_scenarios_cover_the_issue():
    assert set(CI) >= {"default", "namespaced", "gke", "lint"}, sorted(CI)


@pytest.mark.parametrize(
    "values, error",
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"image": {"tagg": "1"}}, "additional properties 'tagg' not allowed"),
        ({"metrics": {"service": {"enabld": True}}}, "additional properties 'enabld' not allowed"),
        ({"containerSecurityContext": {"runAsUsr": 1}}, "additional properties 'runAsUsr' not allowed"),
        ({"tolerations": [{"key": "a", "effects": "NoSchedule"}]}, "additional properties 'effects' not allowed"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        ({"replicaCount": 2}, "replicaCount"),  # two standalone operators would fight
        ({"metrics": {"serviceMonitor": {"enabled": True}}}, "metrics/service/enabled"),
        ({"logLevel": "trace"}, "logLevel"),
        ({"capacity": {"pools": [{"name": "l4", "accelerator": "nvidia-l4", "maxnodes": 3}]}},
         "additional properties 'maxnodes' not allowed"),
        ({"capacity": {"pools": [{"name": "l4"}]}}, "missing property 'accelerator'"),
    ],
    ids=["unknown-top", "unknown-nested", "unknown-deep", "unknown-k8s-field", "unknown-in-list",
         "bad-namespace", "replicas-without-peering", "servicemonitor-without-service", "bad-enum",
         "capacity-unknown-field", "capacity-no-accelerator"],
)
def test_schema_rejects(helm, tmp_path, values, error):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    done = helm("template", RELEASE, str(CHART), "--values", str(path), check=False)
    assert done.returncode != 0, f"helm accepted {values}"
    assert error in done.stderr, done.stderr


def schema_objects(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if node.get("type") == "object":
        yield path or ".", node
    for name, child in node.get("properties", {}).items():
        yield from schema_objects(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from schema_objects(node[key], f"{path}.{key}")


def test_schema_closes_every_object():
    """additionalProperties is false, or a typed map, everywhere; the only open objects are
    Kubernetes types below `affinity`, which kubernetes-validate checks on the rendered pod."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for path, node in schema_objects(schema):
        if path.startswith(".affinity."):
            assert "Kubernetes type" in node["description"], path
            continue
        assert "additionalProperties" in node, f"{path} accepts unknown keys"


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_value_is_documented():
    text = (CHART / "values.yaml").read_text()
    documented = re.findall(r"^\s*## @param (\S+) \S", text, flags=re.M)
    keys = list(leaves(yaml.safe_load(text)))
    assert sorted(set(keys) - set(documented)) == [], "values without a `## @param key description` line"
    assert sorted(set(documented) - set(keys)) == [], "@param lines for keys that do not exist"
    assert len(documented) == len(set(documented)), "a key is documented twice"


def test_lint_values_set_every_option():
    defaults = set(leaves(yaml.safe_load((CHART / "values.yaml").read_text())))
    lint = set(leaves(yaml.safe_load(CI["lint"].read_text())))
    unset = [key for key in defaults if not any(path == key or path.startswith(f"{key}.") for path in lint)]
    assert sorted(unset) == []


# --- rendered objects ------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=IDS)
def test_rendered_objects_are_valid_kubernetes(render, values):
    objects = render(values, include_crds=True)
    version = kubernetes_validate.latest_version()
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue  # no schema in kubernetes-validate: see test_crd_kinds_are_well_formed
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {'.'.join(map(str, exc.absolute_path))}: {exc.message}")


@pytest.mark.parametrize("values", CI_VALUES, ids=IDS)
def test_crd_kinds_are_well_formed(render, values):
    objects = render(values)
    deployment = only(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
            continue
        assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
        if obj["kind"] in ("ServiceMonitor", "PodMonitoring"):
            selector = obj["spec"]["selector"]["matchLabels"]
            (endpoint,) = obj["spec"]["endpoints"]
            assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
            if obj["kind"] == "PodMonitoring":
                assert selector.items() <= pod_labels.items()
            else:
                service = only(objects, "Service")
                assert selector.items() <= service["metadata"]["labels"].items()
                assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_crds_in_the_chart_match_the_generated_ones(render):
    """The chart installs the same CRD `make crds` generates; on failure run `make crds`."""
    generated = ROOT / "crds" / "gemma.dev_gemmadeployments.yaml"
    copy = CHART / "crds" / generated.name
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(p.name for p in generated.parent.iterdir())
    assert copy.read_text() == generated.read_text(), f"{copy.relative_to(ROOT)} drifted: run `make crds`"
    (rendered,) = of_kind(render(include_crds=True), "CustomResourceDefinition")
    assert rendered == yaml.safe_load(generated.read_text())


def test_argocd_health_script_ships_with_the_chart():
    assert (CHART / "files" / "argocd-health.lua").is_file()
    assert "ci/" in (CHART / ".helmignore").read_text().split()


# --- RBAC ------------------------------------------------------------------------------

# What the operator sends, as tests/integration/test_rbac.py derives it from a recorded run.
MANAGER = {
    ("gemma.dev", "gemmadeployments", verb) for verb in ("get", "list", "watch")
} | {("gemma.dev", "gemmadeployments/status", "patch")} | {
    (group, resource, verb)
    for group, resource in (("apps", "deployments"), ("", "services"))
    for verb in ("list", "watch", "create", "patch")
} | {("", "events", "create"), ("", "events", "list"), ("", "pods", "list"), ("", "pods", "watch"),
     ("", "configmaps", "get")} | {  # get: spec.chatTemplate.configMapRef, by name
    (group, resource, verb)
    for group, resource in (("policy", "poddisruptionbudgets"), ("autoscaling", "horizontalpodautoscalers"))
    for verb in ("list", "watch", "create", "patch", "delete")
} | {("keda.sh", "scaledobjects", verb) for verb in ("list", "create", "patch", "delete")} | {
    (group, resource, verb)
    for group, resource in (("", "persistentvolumeclaims"), ("batch", "jobs"))
    for verb in ("list", "watch", "create", "patch", "delete")
}
# gateway.enabled (on in every CI scenario): spec.gateway's objects applied, read again on the resync (the two
# third-party kinds listed, the picker's own by name: no list) and pruned, the Gateway read for its address, and
# what RBAC's escalation check needs the operator to hold for the picker's Role.
GATEWAY = {
    (group, resource, verb)
    for group, resource in (("inference.networking.k8s.io", "inferencepools"), ("gateway.networking.k8s.io", "httproutes"))
    for verb in ("list", "create", "patch", "delete")
} | {
    (group, resource, verb)
    for group, resource in (("", "serviceaccounts"), ("", "configmaps"), ("rbac.authorization.k8s.io", "roles"),
                            ("rbac.authorization.k8s.io", "rolebindings"))
    for verb in ("get", "create", "patch", "delete")
} | {("apps", "deployments", "delete"), ("", "services", "delete"), ("gateway.networking.k8s.io", "gateways", "get"),
     ("", "pods", "get")} | {("inference.networking.k8s.io", "inferencepools", v) for v in ("get", "list", "watch")} | {
    ("inference.networking.x-k8s.io", resource, verb)
    for resource in ("inferenceobjectives", "inferencemodelrewrites") for verb in ("get", "list", "watch")}
MANAGER |= GATEWAY
# Only with secretCheck.enabled: the early check that spec.hfTokenSecretRef exists.
SECRET_GET = {("", "secrets", "get")}
COLLECTOR = {
    "PodMonitoring": {("monitoring.googleapis.com", "podmonitorings", verb)
                      for verb in ("list", "create", "patch", "delete")},
    "ServiceMonitor": {("monitoring.coreos.com", "servicemonitors", verb)
                       for verb in ("list", "create", "patch", "delete")},
}
MANAGER_ONE_COLLECTOR = MANAGER  # models.metricsCollector set to one kind: only its grants
MANAGER = MANAGER | COLLECTOR["PodMonitoring"] | COLLECTOR["ServiceMonitor"]  # auto: either
# The only kinds the operator deletes: optional children the spec no longer needs (it prunes them),
# and the cache objects a deployment stops using when it was their last owner (as garbage
# collection does once the last owner is deleted).
PRUNED = {"poddisruptionbudgets", "horizontalpodautoscalers", "scaledobjects", "podmonitorings", "servicemonitors",
          "persistentvolumeclaims", "jobs",
          # spec.gateway's: the pool, the route, and the endpoint picker's objects (its Deployment
          # and Service are NAME-epp, beside the model's).
          "inferencepools", "httproutes", "serviceaccounts", "configmaps", "roles", "rolebindings", "deployments",
          "services"}
CLUSTER_READ = {("", "nodes", verb) for verb in ("list", "watch")} | {
    ("apiextensions.k8s.io", "customresourcedefinitions", verb) for verb in ("list", "watch")
}
# Granted though never sent: admission (OwnerReferencesPermissionEnforcement) checks it when a
# child names its GemmaDeployment with blockOwnerDeletion: true (see test_rbac.py, ADMISSION_ONLY).
OWNER_FINALIZERS = {("gemma.dev", "gemmadeployments/finalizers", "update")}
NAMESPACES_READ = {("", "namespaces", verb) for verb in ("list", "watch")}  # kopf, when given namespaces
PEERING = lambda plural: {("kopf.dev", plural, verb) for verb in ("list", "watch", "patch")}  # noqa: E731


@pytest.mark.parametrize("values", CI_VALUES, ids=IDS)
def test_rbac_has_no_wildcards_or_dangerous_verbs(render, values):
    for kind, namespace, rule in rules(render(values)):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert not any("*" in item for item in rule.get(field, [])), f"{kind} {namespace}: {field} {rule}"
        assert not set(rule["verbs"]) & {"deletecollection", "escalate", "bind", "impersonate"}, rule
        assert "delete" not in rule["verbs"] or set(rule["resources"]) <= PRUNED, rule
        if "pods" in rule["resources"]:
            # get: only for RBAC's escalation check on the endpoint picker's Role (never sent)
            assert rule["resources"] == ["pods"] and rule["verbs"] in (["list", "watch"], ["get"]), "pods: never written"
        if "secrets" in rule["resources"]:
            assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"], "secrets: get by name only"
        if "nodes" in rule["resources"]:
            assert rule == {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}


def test_rbac_cluster_wide(render):
    objects = render(CI["default"])
    assert grants(objects) == MANAGER | OWNER_FINALIZERS | CLUSTER_READ
    assert not of_kind(objects, "Role") and not of_kind(objects, "RoleBinding")
    assert {b["roleRef"]["name"] for b in of_kind(objects, "ClusterRoleBinding")} == {
        r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")
    }


def test_rbac_namespaced(render):
    objects = render(CI["namespaced"])
    assert grants(objects) == CLUSTER_READ | NAMESPACES_READ, "only reads are cluster-wide"
    for namespace in ("team-a", "team-b"):
        assert grants(objects, namespace) == MANAGER | OWNER_FINALIZERS
    assert sorted(r["metadata"]["namespace"] for r in of_kind(objects, "Role")) == ["team-a", "team-b"]
    for binding in of_kind(objects, "RoleBinding"):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{SA}-manager"
        }
    assert grants(objects, NAMESPACE) == set(), "nothing in the operator's own namespace unless watched"


def test_rbac_peering(render):
    gke = render(CI["gke"])  # cluster-wide, peering on
    assert grants(gke) == MANAGER | OWNER_FINALIZERS | CLUSTER_READ | PEERING("clusterkopfpeerings")
    assert only(gke, "ClusterKopfPeering")["metadata"]["name"] == SA  # the release's full name
    lint = render(CI["lint"])  # one namespace, peering on
    assert grants(lint, "models") == (MANAGER_ONE_COLLECTOR | COLLECTOR["ServiceMonitor"] | OWNER_FINALIZERS
                                      | PEERING("kopfpeerings") | SECRET_GET)  # fmt: skip
    assert only(lint, "KopfPeering")["metadata"] == {**only(lint, "KopfPeering")["metadata"], "namespace": "models"}


@pytest.mark.parametrize("values", CI_VALUES, ids=IDS)
def test_bindings_name_the_operator_service_account(render, values):
    objects = render(values)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    (account,) = of_kind(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in
             of_kind(objects, "ClusterRole") + of_kind(objects, "Role")}
    for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding"):
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], scope, ref["name"]) in roles
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
        ]


def operator_env(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]


def test_no_secret_permission_unless_the_early_check_is_on(render):
    """The operator learns of a missing token Secret from the pod; `get` on Secrets only with secretCheck.enabled."""
    default = render(CI["default"])
    assert not any("secrets" in rule["resources"] for _, _, rule in rules(default))
    env = {e["name"]: e.get("value") for e in operator_env(default)}
    assert "GEMMA_OPERATOR_SECRET_CHECK" not in env and env["GEMMA_OPERATOR_SCALE_UP_BUDGET_S"] == "900"
    checked = render(CI["default"], sets=("secretCheck.enabled=true", "scaleUpBudgetSeconds=1200"))
    assert grants(checked) == MANAGER | OWNER_FINALIZERS | CLUSTER_READ | SECRET_GET
    env = {e["name"]: e.get("value") for e in operator_env(checked)}
    assert env["GEMMA_OPERATOR_SECRET_CHECK"] == "true" and env["GEMMA_OPERATOR_SCALE_UP_BUDGET_S"] == "1200"


def test_rbac_can_be_left_to_the_cluster_admin(render):
    objects = render(sets=("rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=ops"))
    assert {obj["kind"] for obj in objects} == {"Deployment", "ConfigMap"}  # the ConfigMap: declared capacity
    assert only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


# --- the operator pod ------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=IDS)
def test_pod_security_restricted(render, values):
    pod = only(render(values), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security, context = pod["securityContext"], container["securityContext"]
    assert security["runAsNonRoot"] is True and context["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int) and security["runAsUser"] > 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert not context.get("privileged")
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": pod["volumes"][0]["emptyDir"]["sizeLimit"]}},
                              {"name": "capacity", "configMap": {"name": f"{SA if values != CI['lint'] else 'gemma-operator-lint'}-capacity"}}]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"},
                                         {"name": "capacity", "mountPath": "/etc/gemma-operator/capacity", "readOnly": True}]


@pytest.mark.parametrize("values", CI_VALUES, ids=IDS)
def test_operator_container(render, values):
    objects = render(values)
    settings = merged_values(values)
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": settings["health"]["port"], "metrics": settings["metrics"]["port"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GEMMA_OPERATOR_METRICS_PORT"] == str(ports["metrics"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--liveness=http://0.0.0.0:{ports['health']}/healthz" in container["args"]


def test_args_follow_watch_scope_and_peering(render):
    def args(name: str) -> list[str]:
        return only(render(CI[name]), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]

    assert {"--all-namespaces", "--standalone"} <= set(args("default"))
    assert "--namespace=team-a" in args("namespaced") and "--namespace=team-b" in args("namespaced")
    assert "--all-namespaces" not in args("namespaced")
    assert "--peering=gemma-lint" in args("lint"), "peering.name, when set, wins"
    assert f"--peering={SA}" in args("gke") and "--standalone" not in args("gke")
    default = only(render(CI["default"]), "Deployment")["spec"]
    assert default["replicas"] == 1 and default["strategy"] == {"type": "Recreate"}


def test_image_defaults_to_app_version_and_digest_wins(render):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = lambda objects: only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]  # noqa: E731
    assert image(render()).endswith(f":{chart['appVersion']}")
    assert "@sha256:" in image(render(CI["lint"]))


def test_user_strings_cannot_inject_yaml(render):
    """extraArgs and annotations are quoted or dumped as data, never pasted as YAML text."""
    tricky = "--x=1\n  - --evil"
    objects = render(sets=(f"extraArgs[0]={tricky}", "podAnnotations.a=b: c"))
    pod = only(objects, "Deployment")["spec"]["template"]
    assert pod["spec"]["containers"][0]["args"][-1] == tricky
    assert pod["metadata"]["annotations"] == {"a": "b: c"}


def test_metrics_objects_are_opt_in(render):
    kinds = {obj["kind"] for obj in render(CI["default"])}
    assert not kinds & {"Service", "ServiceMonitor", "PodMonitoring"}
    assert {"Service", "ServiceMonitor", "PodMonitoring"} <= {obj["kind"] for obj in render(CI["gke"])}


def test_kopf_peering_crds_match_the_peering_objects_and_rbac(render):
    crds = [doc for doc in yaml.safe_load_all((CHART / "files" / "kopf-peering-crds.yaml").read_text()) if doc]
    for crd in crds:
        kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)
    served = {(f"{c['spec']['group']}/{c['spec']['versions'][0]['name']}", c["spec"]["names"]["kind"]): c for c in crds}
    gke, lint = render(CI["gke"]), render(CI["lint"])
    for objects, kind, scope in ((gke, "ClusterKopfPeering", "Cluster"), (lint, "KopfPeering", "Namespaced")):
        peering = only(objects, kind)
        crd = served[(peering["apiVersion"], kind)]
        assert crd["spec"]["scope"] == scope
        plural = crd["spec"]["names"]["plural"]
        assert any(crd["spec"]["group"] in rule["apiGroups"] and plural in rule["resources"]
                   for _, _, rule in rules(objects))


def test_replicas_without_peering_say_that_peering_is_needed(helm, tmp_path):
    """The refusal names the value to set and why, not a bare `maximum: got 2, want 1`.
    (`helm lint` reports a template's `fail` as INFO only; install, upgrade and template refuse.)"""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"replicaCount": 2}))
    for source in (("--values", str(path)), ("--set", "replicaCount=2")):
        done = helm("template", RELEASE, str(CHART), *source, check=False)
        assert done.returncode != 0, f"helm accepted replicaCount 2 without peering ({source[0]})"
        assert "peering.enabled=true" in done.stderr and "replicaCount is 2" in done.stderr, done.stderr
        assert "maximum: got 2, want 1" not in done.stderr
    peered = helm("template", RELEASE, str(CHART), "--set", "replicaCount=2", "--set", "peering.enabled=true")
    assert "kind: ClusterKopfPeering" in peered.stdout


def release(helm, name: str, *sets: str) -> list[dict[str, Any]]:
    args = ["template", name, str(CHART), "--namespace", NAMESPACE]
    for pair in ("peering.enabled=true", "replicaCount=2", *sets):
        args += ["--set", pair]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


@pytest.mark.parametrize(
    "kind, sets",
    [("ClusterKopfPeering", ()), ("KopfPeering", ("watchNamespaces={models}",))],
    ids=["cluster-wide", "namespaced"],
)
def test_each_release_has_its_own_peering_object_and_joins_it(helm, kind, sets):
    """Two releases in one cluster must not meet in one peering object: the pods of both would
    elect one leader among them, and uninstalling one would delete the other's object."""
    names = {}
    for name in ("alpha", "beta"):
        objects = release(helm, name, *sets)
        (peering,) = of_kind(objects, kind)
        args = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--peering={peering['metadata']['name']}" in args, args
        names[name] = peering["metadata"]["name"]
    assert names["alpha"] != names["beta"], names
    assert all(name in names[name] for name in names), "the object's name says whose it is"


# --- declared capacity (issue 12) --------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=IDS)
def test_capacity_pools_reach_the_operator_as_a_file(render, values, catalog):
    """capacity.pools -> a ConfigMap, mounted as a directory (a subPath mount would never update),
    at the path the operator reads from GEMMA_OPERATOR_CAPACITY_FILE; the content is what capacity.py parses."""
    from gemma_operator import capacity

    objects = render(values)
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = pathlib.PurePosixPath(env[capacity.ENV])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert "subPath" not in mount and mount.get("readOnly") is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"]]
    declared = capacity.parse_text(config["data"][path.name], catalog)
    assert [p.name for p in declared] == [p["name"] for p in merged_values(values)["capacity"]["pools"]]
    assert config["metadata"]["namespace"] == NAMESPACE


def test_capacity_schema_matches_the_capacity_model():
    from gemma_operator.capacity import DeclaredPool

    schema = json.loads((CHART / "values.schema.json").read_text())
    pool = schema["properties"]["capacity"]["properties"]["pools"]["items"]
    fields = {f.alias or name for name, f in DeclaredPool.model_fields.items()}
    assert set(pool["properties"]) == fields
    assert set(pool["required"]) == {f.alias or n for n, f in DeclaredPool.model_fields.items() if f.is_required()}
