"""What one request of each shape costs the API server, in CPU: the parts of reconcile.py's "api CPU".

Against a fresh API server (the emulator's process, or envtest's etcd + kube-apiserver when
KUBEBUILDER_ASSETS is set, as reconcile.py), each shape is sent --n times (to --n distinct objects,
from --threads client threads) and the server's CPU over those requests is divided by --n. The
objects are gemma-operator's own: the Deployment, Service and first status of a GemmaDeployment as
decide renders them on the gke-l4 fixture (owner references left out: there is no owner here).
Shapes, one row each:

* the children's first write: a create (POST) as the floor and gemma-operator's first sight do,
  and a server-side apply as gemma-operator did before;
* the ownership upgrade (ownership.upgrade's JSON patch) of a created Deployment: the extra request
  gemma-operator sends before the first re-apply of a child it created;
* a GemmaDeployment's first status write: the merge patch gemma-operator sends, smaller variants of
  it, a server-side apply of it, and kopf's annotation patch (what the floor writes instead).

Not a test: nothing asserts. CPU seconds are the figures; wall time per request moves with the
machine's load.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import reconcile  # noqa: E402  (its Server, as it runs it; puts the fixtures and operator on sys.path)

NS = reconcile.NS
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
MANAGER = {"fieldManager": "gemma-operator"}
KOPF_ANNOTATION = "kopf.zalando.org/last-handled-configuration"


def rendered() -> tuple[dict, dict, dict]:
    """The Deployment, the Service and the first status of one GemmaDeployment, as decide makes them."""
    from gemma_operator import catalog
    from tests.unit.test_decide import fresh, run

    intent = run(catalog.load(), fresh())
    objs = {item.obj["kind"]: copy.deepcopy(dict(item.obj)) for item in intent.applies}
    for obj in objs.values():
        obj["metadata"].pop("ownerReferences", None)
    return objs["Deployment"], objs["Service"], json.loads(json.dumps(intent.status))


def named(obj: dict, name: str) -> dict:
    obj = copy.deepcopy(obj)
    obj["metadata"].update(name=name, namespace=NS)
    return obj


def without_reasons(status: dict) -> dict:
    status = copy.deepcopy(status)
    status["selection"].pop("reasons", None)
    return status


def without_explanations(status: dict) -> dict:
    status = without_reasons(status)
    status["selection"].pop("predicted", None)
    for cond in status.get("conditions") or []:
        cond["message"] = ""
    return status


def shapes(deployment: dict, service: dict, status: dict) -> list[tuple[str, Callable[[Any, int], None]]]:
    dep_path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    svc_path = f"/api/v1/namespaces/{NS}/services"
    gd_path = reconcile.GD_PATH
    from gemma_operator import ownership

    def create(path, obj, prefix):
        return lambda api, i: api.request("POST", path, named(obj, f"{prefix}-{i}"), query=MANAGER)

    def apply(path, obj, prefix):
        return lambda api, i: api.request("PATCH", f"{path}/{prefix}-{i}", named(obj, f"{prefix}-{i}"),
                                          query={**MANAGER, "force": "true"}, content_type=APPLY)

    patches: dict[int, list] = {}

    def read_for_upgrade(api, i):  # not timed: the operator has the object in its index
        meta = api.request("GET", f"{dep_path}/c-{i}")["metadata"]
        patches[i] = list(ownership.upgrade(ownership.index_metadata(meta)["managedFields"], meta["resourceVersion"]))

    def upgrade(api, i):  # of the Deployments "create deployments" made
        api.request("PATCH", f"{dep_path}/c-{i}", patches[i], query=MANAGER, content_type=JSON_PATCH)

    upgrade.prepare = read_for_upgrade

    def status_merge(body, first):
        return lambda api, i: api.request("PATCH", f"{gd_path}/gd-{first}-{i}/status", {"status": body},
                                          content_type=MERGE)

    def status_apply(api, i, first):
        body = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                "metadata": {"name": f"gd-{first}-{i}"}, "status": status}
        api.request("PATCH", f"{gd_path}/gd-{first}-{i}/status", body, query={**MANAGER, "force": "true"},
                    content_type=APPLY)

    def kopf_annotation(api, i, first):
        spec = {"spec": {}}
        body = {"metadata": {"annotations": {KOPF_ANNOTATION: json.dumps(spec, separators=(",", ":"))}}}
        api.request("PATCH", f"{gd_path}/gd-{first}-{i}", body, content_type=MERGE)

    return [
        ("create deployments", create(dep_path, deployment, "c")),
        ("apply deployments (creating)", apply(dep_path, deployment, "a")),
        ("create services", create(svc_path, service, "c")),
        ("apply services (creating)", apply(svc_path, service, "a")),
        ("json-patch managedFields (the upgrade)", upgrade),
        (f"patch status, merge, full ({len(json.dumps(status))} B)", status_merge(status, 0)),
        (f"patch status, merge, no selection.reasons ({len(json.dumps(without_reasons(status)))} B)",
         status_merge(without_reasons(status), 1)),
        (f"patch status, merge, no reasons/predicted/messages ({len(json.dumps(without_explanations(status)))} B)",
         status_merge(without_explanations(status), 2)),
        ("patch status, merge, phase only", status_merge({"phase": "Deploying"}, 3)),
        ("patch status, apply, full", lambda api, i: status_apply(api, i, 4)),
        ("patch gemmadeployments, kopf's annotation (floor)", lambda api, i: kopf_annotation(api, i, 5)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="requests of each shape (distinct objects)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--atomic", default="", help="comma list of status fields (e.g. selection) the CRD "
                        "marks x-kubernetes-map-type: atomic here: one owned field each instead of every leaf")
    args = parser.parse_args()
    deployment, service, status = rendered()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gemma-request-cost-"))
    server = reconcile.Server(workdir)
    api = server.api
    try:
        crds = ROOT / "crds"
        if args.atomic:
            import yaml

            crds = workdir / "crds"
            crds.mkdir()
            for path in (ROOT / "crds").glob("*.yaml"):
                docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
                for doc in docs:
                    if doc.get("spec", {}).get("names", {}).get("kind") == "GemmaDeployment":
                        for version in doc["spec"]["versions"]:
                            fields = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
                            for name in args.atomic.split(","):
                                fields[name]["x-kubernetes-map-type"] = "atomic"
                (crds / path.name).write_text(yaml.safe_dump_all(docs))
        api.apply_crds(crds)
        api.create_namespace(NS)
        table = shapes(deployment, service, status)
        gd = lambda k: {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",  # noqa: E731
                        "metadata": {"name": f"gd-{k // args.n}-{k % args.n}", "namespace": NS}, "spec": {}}
        with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
            for _ in range(60):  # a real server answers 429 for a moment after the CRD is established
                try:
                    api.request("GET", reconcile.GD_PATH)
                    break
                except Exception:  # noqa: BLE001
                    time.sleep(1)
            list(pool.map(lambda i: api.request("POST", reconcile.GD_PATH, gd(i)), range(args.n * 6)))
            time.sleep(2)
            print(f"{server.kind}, n={args.n} each, {args.threads} threads; load average "
                  f"{os.getloadavg()[0]:.1f}" + (f"; status fields made atomic: {args.atomic}" if args.atomic else ""))
            print("| request | API server CPU ms per request | wall ms per request |")
            print("|---|---|---|")
            for label, send in table:
                if hasattr(send, "prepare"):
                    list(pool.map(lambda i: send.prepare(api, i), range(args.n)))
                    time.sleep(1)
                cpu0, t0 = server.cpu_s(), time.monotonic()
                list(pool.map(lambda i: send(api, i), range(args.n)))
                cpu, wall = server.cpu_s() - cpu0, time.monotonic() - t0
                print(f"| {label} | {cpu / args.n * 1000:.2f} | {wall / args.n * 1000:.2f} |", flush=True)
                time.sleep(1)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
