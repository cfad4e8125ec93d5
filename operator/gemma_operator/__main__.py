"""gemma-operator CLI: `plan` (from a node list, or the nodes of the kubeconfig's cluster), `crds`, and `run` (the operator)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from . import catalog as catalog_mod
from . import candidates as candidates_mod
from . import gateway as gateway_mod
from . import capacity, chat_template, clusterread, scaling, validation
from .api.v1alpha1 import API_VERSION, KIND, GemmaDeploymentSpec
from .inventory import on_gke, pools
from .planner import InvalidSpec, NoFit, plan, token_warning
from .render import endpoint, example_request, render, selector_labels

EXIT_CLUSTER = 1  # the cluster could not be read (plan) or no credentials were found (run)
EXIT_INVALID = 2
EXIT_NOFIT = 3
STDIN = "-"


class UsageError(Exception):
    """Bad input: exit 2 with a message naming the field."""


def _where(path: str) -> str:
    return "standard input" if path == STDIN else path


def _load_yaml(path: str) -> list[Any]:
    try:
        if path == STDIN:
            return [d for d in yaml.safe_load_all(sys.stdin) if d is not None]
        with open(path, encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{_where(path)}: not valid YAML: {exc}") from None


def _kinds(docs: list[Any]) -> str:
    kinds = [d.get("kind") or "(no kind)" if isinstance(d, dict) else type(d).__name__ for d in docs]
    return ", ".join(dict.fromkeys(kinds))


def load_resources(path: str) -> list[dict[str, Any]]:
    """Every GemmaDeployment in a file, in order."""
    return load_file(path)[0]


def load_file(path: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Every GemmaDeployment in a file, in order, and the ConfigMaps beside them (name -> data): a
    spec.chatTemplate.configMapRef to one of them is checked and its sample prompt printed."""
    docs = _load_yaml(path)
    config_maps = {(d.get("metadata") or {}).get("name", ""): dict(d.get("data") or {})
                   for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap" and d.get("apiVersion") == "v1"}  # fmt: skip
    return _resources(path, docs), config_maps


def _resources(path: str, docs: list[Any]) -> list[dict[str, Any]]:
    if not docs:
        raise UsageError(f"{_where(path)} is empty: no {KIND} found")
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if not found:
        raise UsageError(f"{_where(path)}: no {KIND} found; found {_kinds(docs)}")
    for doc in found:
        if doc.get("apiVersion") != API_VERSION:
            raise UsageError(f"{_where(path)}: apiVersion must be {API_VERSION}, not {doc.get('apiVersion')!r}")
    return found


def load_nodes(path: str) -> list[dict[str, Any]]:
    """Nodes from `kubectl get nodes -o yaml` (a List or NodeList), or a file of Node documents.

    No nodes at all is an input error, not "nothing fits": it is what a failed
    `kubectl get nodes > nodes.yaml` leaves behind.
    """
    nodes: list[dict[str, Any]] = []
    docs = _load_yaml(path)
    for doc in docs:
        if not isinstance(doc, dict):
            raise UsageError(f"{_where(path)}: expected a List, NodeList or Node, got {type(doc).__name__}")
        items = doc.get("items") if doc.get("kind") in ("List", "NodeList") else [doc]
        for item in items or []:
            if not isinstance(item, dict) or item.get("kind", "Node") != "Node":
                # Name what is there, as load_resources does: a ConfigMap or Pod list given by mistake.
                raise UsageError(f"{_where(path)}: items must be Nodes; found {_kinds(items)}")
            nodes.append(item)
    if not nodes:
        held = "is empty" if not docs else "holds " + " and ".join(f"a {d.get('kind', 'document')} with no items" for d in docs)
        raise UsageError(
            f"{_where(path)} {held}: no nodes to plan on. Did `kubectl get nodes -o yaml` fail, "
            "or point at the wrong cluster?"
        )
    return nodes


def parse_spec(resource: dict[str, Any]) -> GemmaDeploymentSpec:
    try:
        return GemmaDeploymentSpec.model_validate(resource.get("spec") or {})
    except ValidationError as exc:
        raise UsageError("invalid: " + "; ".join(validation.problems(exc, GemmaDeploymentSpec))) from None


def _predicted_words(p: dict[str, Any]) -> str:
    w = p["workload"]
    if "latencySeconds" in p:  # an embedding plan (performance.EmbedPrediction)
        cost = (f"${p['costPerMillionInputTokens']:g} per million input tokens" if p.get("costPerMillionInputTokens") is not None
                else "no price")  # fmt: skip
        return (f"{w['inputTokens']} input tokens x {w['concurrency']}: {p['latencySeconds']:g} s a request alone, "
                f"{p['latencySecondsAtConcurrency']:g} s at that concurrency; full load {p['inputTokensPerSecond']:g} input tok/s "
                f"({p['requestsPerSecond']:g} req/s) per replica, {p['maxConcurrency']} per forward pass, "
                f"{p['replicas']} replica(s), {cost}")  # fmt: skip
    cost = f"${p['costPerMillionTokens']:g} per million output tokens" if p.get("costPerMillionTokens") is not None else "no price"
    return (f"{w['promptTokens']} + {w['outputTokens']} tokens x {w['concurrency']}: TTFT {p['ttftSeconds']:g} s, "
            f"{p['outputTokensPerSecondPerUser']:g} tok/s per user, {p['outputTokensPerSecond']:g} in total, "
            f"max {p['maxConcurrency']} at once, {p['replicas']} replica(s), {cost}")


def _table(selection: dict[str, Any], extra: dict[str, str], out: TextIO) -> None:
    rows = [(k, v) for k, v in selection.items() if k != "reasons"] + list(extra.items())
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        if key == "predicted" and isinstance(value, dict):
            value = _predicted_words(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        out.write(f"{key:<{width}}  {value}\n")
    out.write("\nWhy:\n")
    for i, reason in enumerate(selection["reasons"], 1):
        out.write(f"{i:>2}. {reason}\n")


@dataclass
class Outcome:
    """The plan of one GemmaDeployment: a selection, a NoFit, or why its spec is invalid."""

    name: str
    namespace: str
    endpoint: str | None = None
    selection: dict[str, Any] | None = None
    manifests: list[dict[str, Any]] = field(default_factory=list)
    no_fit: NoFit | None = None
    invalid: str | None = None
    warning: str | None = None  # e.g. a gated checkpoint and no token
    candidates: list[dict[str, Any]] = field(default_factory=list)  # every pool planned alone (candidates.compare)
    example: str | None = None  # a request to try (embedding models)
    prompt: chat_template.Prompt | None = None  # what a sample conversation becomes on the server

    @property
    def exit_code(self) -> int:
        return EXIT_INVALID if self.invalid else EXIT_NOFIT if self.no_fit else 0

    def document(self, manifests: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "selection": self.selection}
        if self.invalid:
            doc["invalid"] = {"message": self.invalid.removeprefix("invalid: ")}
        elif self.no_fit:
            doc["noFit"] = no_fit_document(self.no_fit)
        else:
            doc["endpoint"] = self.endpoint
            if self.example:
                doc["example"] = self.example
            if self.prompt:
                doc["chatTemplate"] = self.prompt.as_dict()
        doc["manifests"] = self.manifests if manifests else []
        return doc


def plan_resource(resource: dict[str, Any], nodes: list[dict[str, Any]], cat: catalog_mod.Catalog,
                  declared: list[Any] = (), collector: str = "auto",  # type: ignore[assignment]
                  candidates: list[str] | None = None,
                  config_maps: dict[str, dict[str, str]] | None = None) -> Outcome:  # fmt: skip
    """`candidates`: fill outcome.candidates for these pool or accelerator names ([] for every pool; None: not at all).
    `config_maps`: the ConfigMaps beside the resource (name -> data), for a chatTemplate.configMapRef."""
    meta = resource.get("metadata") or {}
    outcome = Outcome(name=meta.get("name", "gemma"), namespace=meta.get("namespace", "default"))
    try:
        spec = parse_spec(resource)
        inventory = pools(nodes, cat, spec.node_selector, declared)
        result = plan(spec, inventory, cat)
        if candidates is not None:
            outcome.candidates = candidates_mod.compare(spec, inventory, cat, result if not isinstance(result, NoFit) else None,
                                                   candidates or None)  # fmt: skip
        if isinstance(result, NoFit):
            outcome.no_fit = result
            return outcome
        # No cluster to ask what it serves: the collector from --collector, else GKE's Managed Prometheus
        # (PodMonitoring) on GKE's nodes, a Prometheus Operator (ServiceMonitor) elsewhere.
        if collector == "auto":
            collector = "PodMonitoring" if on_gke(nodes) else "ServiceMonitor"
        choice = scaling.choose(spec, None, collector)
        outcome.manifests = render(result, outcome.name, outcome.namespace, spec, choice=choice)
        outcome.prompt = chat_template.prompt(spec, cat.families[result.family], result.tuning, config_maps)
        if (ref := chat_template.referenced(resource.get("spec") or {})) and ref in (config_maps or {}):
            deployment = next(o for o in outcome.manifests if o["kind"] == "Deployment")  # as the operator stamps it
            chat_template.stamp(deployment["spec"]["template"], spec, chat_template.Source(ref, config_maps[ref]))
        # spec.gateway's objects, as the operator applies them where the cluster serves their CRDs.
        outcome.manifests += gateway_mod.objects(outcome.name, outcome.namespace, spec, result.runtime,
                                                 selector_labels(outcome.name),
                                                 [result.served_model_name, *(a.name for a in result.adapters)],
                                                 cat.images["inference-epp"])  # fmt: skip
    except UsageError as exc:
        outcome.invalid = str(exc)
        return outcome
    except InvalidSpec as exc:
        outcome.invalid = f"invalid: {exc}"
        return outcome
    outcome.selection = result.selection()
    if spec.gateway is not None:
        outcome.selection["reasons"] = [*outcome.selection.get("reasons", []), gateway_mod.reason(result.runtime)]
    outcome.endpoint = endpoint(outcome.name, outcome.namespace, spec)
    outcome.example = example_request(outcome.endpoint, result)
    outcome.warning = token_warning(result, spec)
    return outcome


# The NoFit output, in one place: the JSON/YAML object and the text a person reads.
def no_fit_document(no_fit: NoFit) -> dict[str, Any]:
    return {"message": no_fit.message, "suggestions": [s.as_dict() for s in no_fit.suggestions]}


def print_no_fit(no_fit: NoFit, stream: TextIO, output: str) -> None:
    # The table output gives the NoFit structure; JSON and YAML keep one line (and the document).
    stream.write(no_fit.report() if output == "table" else f"no fit: {no_fit.message}\n")


def read_nodes(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The nodes, the JSON description of where they came from, and the same in words."""
    if args.nodes is not None:
        if args.kubeconfig or args.context:
            raise UsageError("--nodes reads a file; --kubeconfig and --context read a cluster: give one or the other")
        nodes = load_nodes(args.nodes)
        return nodes, {"file": _where(args.nodes), "count": len(nodes)}, f"{len(nodes)} from {_where(args.nodes)}"
    read = clusterread.read_nodes(kubeconfig=args.kubeconfig, context=args.context)
    source = {"kubeconfig": read.kubeconfig, "context": read.context, "server": read.server, "count": len(read.nodes)}
    return read.nodes, source, f"{len(read.nodes)} read from {read.describe()}"


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.file == STDIN and args.nodes == STDIN:
        raise UsageError("-f - and --nodes - both ask for standard input: give one of them a file")
    resources, config_maps = load_file(args.file)
    try:
        nodes, source, source_words = read_nodes(args)
    except clusterread.ClusterReadError as exc:
        err.write(f"{exc}\n")
        return EXIT_CLUSTER
    cat = catalog_mod.load()
    try:
        declared = capacity.read(args.capacity, cat) if args.capacity else []
    except capacity.CapacityError as exc:
        raise UsageError(f"invalid capacity: {exc}") from None
    # The candidate table: with -o table (every pool), or --compare (the pools named).
    names = [n for n in (args.compare or "").split(",") if n] if args.compare else ([] if args.output == "table" else None)
    outcomes = [plan_resource(resource, nodes, cat, declared, args.collector, names, config_maps) for resource in resources]
    if args.compare:
        return _print_compare(outcomes, args, out)
    if len(outcomes) == 1:
        return _print_one(outcomes[0], args, source, source_words, out, err)
    return _print_several(outcomes, args, source, source_words, out, err)


def _print_compare(outcomes: list[Outcome], args: argparse.Namespace, out: TextIO) -> int:
    """`plan --compare`: the named pools' predictions side by side, for each GemmaDeployment."""
    if args.output in ("json", "yaml"):
        _dump({"items": [{"name": o.name, "namespace": o.namespace, "candidates": o.candidates} for o in outcomes]},
              args.output, out)  # fmt: skip
    else:
        for outcome in outcomes:
            if len(outcomes) > 1:
                out.write(f"=== {outcome.namespace}/{outcome.name} ===\n")
            if outcome.invalid:
                out.write(f"{outcome.invalid}\n")
                continue
            out.write(candidates_mod.table(outcome.candidates) if outcome.candidates else "no pool of those names\n")
    return EXIT_INVALID if any(o.invalid for o in outcomes) else 0 if any(o.candidates for o in outcomes) else EXIT_NOFIT


def _candidates(outcome: Outcome, out: TextIO) -> None:
    if outcome.candidates:
        out.write("\nCandidates (each pool planned alone; predictions from performance.py):\n")
        out.write(candidates_mod.table(outcome.candidates))


def _print_problem(outcome: Outcome, output: str, err: TextIO) -> None:
    if outcome.invalid:
        err.write(f"{outcome.invalid}\n")
    elif outcome.no_fit:
        print_no_fit(outcome.no_fit, err, output)


def _print_one(outcome: Outcome, args: argparse.Namespace, source: dict[str, Any], source_words: str,
               out: TextIO, err: TextIO) -> int:
    """One GemmaDeployment: the contract's shape, `{"selection": ..., "manifests": [...]}`."""
    _print_problem(outcome, args.output, err)
    if outcome.invalid:
        return EXIT_INVALID
    if outcome.no_fit:
        err.write(f"(nodes: {source_words})\n")
        if args.output in ("json", "yaml"):
            document = {"selection": None, "noFit": no_fit_document(outcome.no_fit), "manifests": [], "nodes": source}
            _dump(document, args.output, out)
        return EXIT_NOFIT
    assert outcome.selection is not None and outcome.endpoint is not None
    if outcome.warning:
        err.write(f"warning: {outcome.warning}\n")
    if args.output == "table":
        _table(outcome.selection, {"endpoint": outcome.endpoint, "nodes": source_words}, out)
        # The sample prompt before the candidates: the candidates table runs to the next blank section.
        _prompt_table(outcome.prompt, out)
        _candidates(outcome, out)
        if outcome.example:
            out.write(f"\nTry it (from a pod in the cluster):\n  {outcome.example}\n")
        if args.manifests:
            out.write("\n")
            yaml.safe_dump_all(outcome.manifests, out, sort_keys=False)
    else:
        document = {"selection": outcome.selection, "endpoint": outcome.endpoint,
                    **({"example": outcome.example} if outcome.example else {}),
                    **({"chatTemplate": outcome.prompt.as_dict()} if outcome.prompt else {}),
                    "manifests": outcome.manifests if args.manifests else [], "nodes": source}
        _dump(document, args.output, out)
    return 0


def _print_several(outcomes: list[Outcome], args: argparse.Namespace, source: dict[str, Any], source_words: str,
                   out: TextIO, err: TextIO) -> int:
    """Several GemmaDeployments: one result each, in file order; the exit code is the worst (2, then 3)."""
    for outcome in outcomes:
        if outcome.exit_code:
            err.write(f"{outcome.namespace}/{outcome.name}: ")
            _print_problem(outcome, args.output, err)
        elif outcome.warning:
            err.write(f"{outcome.namespace}/{outcome.name}: warning: {outcome.warning}\n")
    if args.output in ("json", "yaml"):
        _dump({"items": [o.document(args.manifests) for o in outcomes], "nodes": source}, args.output, out)
    else:
        out.write(f"{len(outcomes)} GemmaDeployments; nodes: {source_words}\n")
        for outcome in outcomes:
            out.write(f"\n=== {outcome.namespace}/{outcome.name} ===\n")
            if outcome.selection is not None and outcome.endpoint is not None:
                _table(outcome.selection, {"endpoint": outcome.endpoint}, out)
                _prompt_table(outcome.prompt, out)
                if args.manifests:
                    out.write("\n")
                    yaml.safe_dump_all(outcome.manifests, out, sort_keys=False)
            else:
                out.write(f"not planned: {'invalid' if outcome.invalid else 'no fit'} (the message is on standard error)\n")
    codes = {o.exit_code for o in outcomes}
    return EXIT_INVALID if EXIT_INVALID in codes else EXIT_NOFIT if EXIT_NOFIT in codes else 0


def _prompt_table(prompt: chat_template.Prompt | None, out: TextIO) -> None:
    """The sample conversation as the model will see it (special tokens and all)."""
    if prompt is None:
        return
    out.write(f"\nChat template: {prompt.source}\n")
    if prompt.note:
        out.write(f"  ({prompt.note})\n")
    if prompt.text is not None:
        roles = ", ".join(m["role"] for m in chat_template.SAMPLE)
        out.write(f"Sample prompt ({roles}), exactly as the model sees it:\n")
        for line in prompt.text.split("\n"):
            out.write(f"  | {line}\n")


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
    if "--help" not in options:
        # kopf would log dozens of lines and two tracebacks; one sentence says it better.
        problem = clusterread.credentials_problem(os.environ)
        if problem:
            err.write(f"{problem}\n")
            return EXIT_CLUSTER
    scoped = any(o in ("-A", "--all-namespaces") or o.startswith(("-n", "--namespace")) for o in options)
    defaults = [] if scoped else ["--all-namespaces"]
    if not any(o.startswith("--log-format") for o in options):
        # Text for a person at a terminal, JSON for a log collector; --log-format forces either.
        defaults.append("--log-format=plain" if _is_terminal(err) else "--log-format=json")
    peering = any(o.startswith(("-P", "--peering")) for o in options)
    if peering and not any(o.startswith(("-p", "--priority")) for o in options):
        # Peers of equal priority all pause; a random one makes exactly one of them the leader.
        defaults.append(f"--priority={secrets.randbelow(10**6) + 1}")
    try:
        kopf_main(["run", "--module", "gemma_operator.handlers", *defaults, *options], standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or non-file stream
        return False


class _VersionAction(argparse.Action):
    """`--version`: this package's version and the runtime images the catalog pins."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and the pinned runtime images, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        try:
            version = metadata.version("gemma-operator")
        except metadata.PackageNotFoundError:  # run from a checkout that was never installed
            version = "unknown"
        lines = [f"gemma-operator {version}", "runtime images (catalog):"]
        lines += [f"  {name}: {image.ref} ({image.version})" for name, image in catalog_mod.load().images.items()]
        sys.stdout.write("\n".join(lines) + "\n")
        parser.exit(0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gemma-operator", description=__doc__)
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", required=True)
    plan_p = sub.add_parser(
        "plan",
        help="plan a GemmaDeployment against a node list or the current cluster's nodes",
        description="Plans every GemmaDeployment in FILE. Nodes come from --nodes FILE, or else are read "
        "(read-only) from the cluster of the current kubeconfig context. Exit codes: 0 planned, "
        "1 the cluster could not be read, 2 invalid input, 3 nothing fits; with several "
        "GemmaDeployments the worst wins (2, then 3).",
    )
    plan_p.add_argument("-f", "--file", required=True, metavar="FILE", help="GemmaDeployment YAML; - reads standard input")
    plan_p.add_argument(
        "--nodes",
        metavar="FILE",
        help="`kubectl get nodes -o yaml` output; - reads standard input. "
        "Without it, the nodes are read from the cluster of the current kubeconfig context",
    )
    plan_p.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig to read the nodes through (default: $KUBECONFIG, then ~/.kube/config)")
    plan_p.add_argument("--context", metavar="NAME", help="kubeconfig context to use (default: the current context)")
    plan_p.add_argument("-o", "--output", choices=("json", "yaml", "table"), default="table",
                        help="output format (default: %(default)s)")
    plan_p.add_argument("--manifests", action="store_true", help="also print the objects that would be applied")
    plan_p.add_argument("--compare", metavar="POOLS", help="print the predicted speed and cost of the named pools or "
                        "accelerators (comma-separated; --capacity shapes included), each planned alone, side by side")
    plan_p.add_argument("--capacity", metavar="FILE", help="node shapes the cluster adds on demand (`pools:`, "
                        "as the chart value capacity.pools): GKE pools at zero nodes, node auto-provisioning")
    plan_p.add_argument("--collector", choices=("auto", "PodMonitoring", "ServiceMonitor"), default="auto",
                        help="metrics collector of an autoscaled model (default: PodMonitoring on GKE's nodes, "
                        "else ServiceMonitor)")
    plan_p.set_defaults(func=cmd_plan)
    crds_p = sub.add_parser("crds", help="print the CRD generated from the API models")
    crds_p.set_defaults(func=cmd_crds)
    run_p = sub.add_parser(
        "run",
        help="run the operator against the current kubeconfig or in-cluster account",
        description="Options are kopf's (`kopf run --help`): -A, --namespace, --standalone, --liveness, ...; "
        "defaults: --all-namespaces, and logs as text on a terminal, JSON otherwise "
        "(--log-format=plain or --log-format=json forces either).",
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
