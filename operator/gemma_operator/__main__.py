"""gemma-operator CLI: `plan` (no cluster needed), `crds`, and `run` (the operator)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from . import catalog as catalog_mod
from .api.v1alpha1 import API_VERSION, KIND, GemmaDeploymentSpec
from .inventory import pools
from .planner import InvalidSpec, NoFit, plan
from .render import endpoint, render

EXIT_INVALID = 2
EXIT_NOFIT = 3


class UsageError(Exception):
    """Bad input: exit 2 with a message naming the field."""


def _load_yaml(path: str) -> list[Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None


def load_resource(path: str) -> dict[str, Any]:
    """The first GemmaDeployment in a file."""
    for doc in _load_yaml(path):
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            if doc.get("apiVersion") != API_VERSION:
                raise UsageError(f"{path}: apiVersion must be {API_VERSION}, not {doc.get('apiVersion')!r}")
            return doc
    raise UsageError(f"{path}: no {KIND} found")


def load_nodes(path: str) -> list[dict[str, Any]]:
    """Nodes from `kubectl get nodes -o yaml` (a List or NodeList), or a file of Node documents."""
    nodes: list[dict[str, Any]] = []
    for doc in _load_yaml(path):
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: expected a List, NodeList or Node, got {type(doc).__name__}")
        items = doc.get("items") if doc.get("kind") in ("List", "NodeList") else [doc]
        for item in items or []:
            if not isinstance(item, dict) or item.get("kind", "Node") != "Node":
                raise UsageError(f"{path}: items must be Nodes")
            nodes.append(item)
    return nodes


def parse_spec(resource: dict[str, Any]) -> GemmaDeploymentSpec:
    try:
        return GemmaDeploymentSpec.model_validate(resource.get("spec") or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in ("spec", *err["loc"]))
            problems.append(f"{where}: {err['msg']}")
        raise UsageError("invalid: " + "; ".join(problems)) from None


def _table(selection: dict[str, Any], extra: dict[str, str], out: TextIO) -> None:
    rows = [(k, v) for k, v in selection.items() if k != "reasons"] + list(extra.items())
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        out.write(f"{key:<{width}}  {value}\n")
    out.write("\nWhy:\n")
    for i, reason in enumerate(selection["reasons"], 1):
        out.write(f"{i:>2}. {reason}\n")


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    resource = load_resource(args.file)
    spec = parse_spec(resource)
    nodes = load_nodes(args.nodes)
    meta = resource.get("metadata") or {}
    name, namespace = meta.get("name", "gemma"), meta.get("namespace", "default")
    cat = catalog_mod.load()
    try:
        result = plan(spec, pools(nodes, cat, spec.node_selector), cat)
        manifests = [] if isinstance(result, NoFit) else render(result, name, namespace, spec)
    except InvalidSpec as exc:
        err.write(f"invalid: {exc}\n")
        return EXIT_INVALID
    if isinstance(result, NoFit):
        err.write(result.report() if args.output == "table" else f"no fit: {result.message}\n")
        if args.output in ("json", "yaml"):
            no_fit = {"message": result.message, "suggestions": [s.as_dict() for s in result.suggestions]}
            _dump({"selection": None, "noFit": no_fit, "manifests": []}, args.output, out)
        return EXIT_NOFIT
    selection = result.selection()
    if args.output == "table":
        _table(selection, {"endpoint": endpoint(name, namespace, spec)}, out)
        if args.manifests:
            out.write("\n")
            yaml.safe_dump_all(manifests, out, sort_keys=False)
    else:
        _dump({"selection": selection, "manifests": manifests if args.manifests else []}, args.output, out)
    return 0


def _dump(document: dict[str, Any], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        yaml.safe_dump(document, out, sort_keys=False)


def cmd_crds(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .crd import crd_yaml

    out.write(crd_yaml())
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """kopf's own `run`, on this operator's handlers; kopf's options pass through."""
    from kopf.cli import main as kopf_main

    options = [o for o in args.kopf_options if o != "--"]
    scoped = any(o in ("-A", "--all-namespaces") or o.startswith(("-n", "--namespace")) for o in options)
    defaults = [] if scoped else ["--all-namespaces"]
    if not any(o.startswith("--log-format") for o in options):
        defaults.append("--log-format=json")  # structured logs unless asked otherwise
    peering = any(o.startswith(("-P", "--peering")) for o in options)
    if peering and not any(o.startswith(("-p", "--priority")) for o in options):
        # Peers of equal priority all pause; a random one makes exactly one of them the leader.
        defaults.append(f"--priority={secrets.randbelow(10**6) + 1}")
    try:
        kopf_main(["run", "--module", "gemma_operator.handlers", *defaults, *options], standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gemma-operator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    plan_p = sub.add_parser("plan", help="plan a GemmaDeployment against a node list, without a cluster")
    plan_p.add_argument("-f", "--file", required=True, help="GemmaDeployment YAML")
    plan_p.add_argument("--nodes", required=True, help="`kubectl get nodes -o yaml` output")
    plan_p.add_argument("-o", "--output", choices=("json", "yaml", "table"), default="table")
    plan_p.add_argument("--manifests", action="store_true", help="also print the objects that would be applied")
    plan_p.set_defaults(func=cmd_plan)
    crds_p = sub.add_parser("crds", help="print the CRD generated from the API models")
    crds_p.set_defaults(func=cmd_crds)
    run_p = sub.add_parser(
        "run",
        help="run the operator against the current kubeconfig or in-cluster account",
        description="Options are kopf's (`kopf run --help`): -A, --namespace, --standalone, --liveness, ...; "
        "defaults: --all-namespaces and --log-format=json.",
    )
    run_p.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    # `run` hands every option it does not know to kopf (argparse's REMAINDER misses leading options).
    args, unknown = parser().parse_known_args(argv)
    if args.command == "run":
        args.kopf_options = unknown
    elif unknown:
        parser().parse_args(argv)  # reports the unknown arguments and exits 2
    try:
        return args.func(args, out, err)
    except UsageError as exc:
        err.write(f"{exc}\n")
        return EXIT_INVALID
    except BrokenPipeError:  # `plan ... | head`: the reader left; not an error of ours
        return 0


if __name__ == "__main__":
    sys.exit(main())
