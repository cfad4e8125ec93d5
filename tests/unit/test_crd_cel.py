"""The CRD's CEL rules (`x-kubernetes-validations`), evaluated with cel-python as the test API server
evaluates them (tests/integration/kubeapi/schema.py): they compile, they give the models' verdict,
and they walk only bounded data, so kube-apiserver's cost estimate admits the CRD."""

from __future__ import annotations

import copy
import math
import re
from typing import Any, Iterator

import pytest
from pydantic import ValidationError

from gemma_operator.api.v1alpha1 import ADAPTER_SOURCE_MESSAGE, REFUSED_FLAGS, REFUSED_SPELLINGS, GemmaDeploymentSpec
from gemma_operator.crd import crd
from tests.integration.kubeapi import schema as kube_schema


def open_api_schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def rules(node: dict[str, Any], path: str = "", ancestors: tuple = ()) -> Iterator[tuple[str, dict, dict, tuple]]:
    """Every rule as (schema path, node, rule, ancestor nodes); paths like `.spec.env[]`."""
    for rule in node.get("x-kubernetes-validations", []):
        yield path or ".", node, rule, ancestors
    below = (*ancestors, node)
    for name, child in node.get("properties", {}).items():
        yield from rules(child, f"{path}.{name}", below)
    if "items" in node:
        yield from rules(node["items"], f"{path}[]", below)
    if isinstance(node.get("additionalProperties"), dict):
        yield from rules(node["additionalProperties"], f"{path}.*", below)


RULES = list(rules(open_api_schema()))
RULE_IDS = [path for path, *_ in RULES]

EXTRA_ARGS_MESSAGE = f"extraArgs may not carry {', '.join(REFUSED_FLAGS)}, in any spelling a server reads as them"
TOKEN_MESSAGE = "a Hugging Face token is never a literal: use spec.hfTokenSecretRef"
KEY_MESSAGE = "keys are at most 317 characters and qualified names (an optional DNS-subdomain prefix and '/', then a name)"


def test_the_rules_are_where_the_table_expects_them():
    """A new rule needs cases below: this fails until it has them."""
    assert {path: rule["message"] for path, _, rule, _ in RULES} == {
        ".spec.extraArgs": EXTRA_ARGS_MESSAGE,
        ".spec.env[]": TOKEN_MESSAGE,
        ".spec.resources.requests": KEY_MESSAGE,
        ".spec.resources.limits": KEY_MESSAGE,
        ".spec.nodeSelector": KEY_MESSAGE,
        ".spec.cache": "cache.type gcsfuse needs cache.bucket",
        ".spec.adapters[]": ADAPTER_SOURCE_MESSAGE,
        ".spec.chatTemplate": "chatTemplate needs exactly one of inline or configMapRef",
    }


def rule_at(field: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema node and the one rule a cause's field points at (`spec.env[1]` -> `.spec.env[]`)."""
    path = "." + re.sub(r"\[\d+\]", "[]", field)
    ((node, rule),) = [(n, r) for p, n, r, _ in RULES if p == path]
    return node, rule


@pytest.mark.parametrize("path, node, rule, ancestors", RULES, ids=RULE_IDS)
def test_rule_compiles_and_says_why(path, node, rule, ancestors):
    kube_schema.compile_rule(rule["rule"])
    assert rule.get("message", "").strip(), f"{path}: a rule without a message reports its CEL source to users"
    assert set(rule) <= {"rule", "message"}, f"{path}: {sorted(rule)}"  # no oldSelf-style extras to emulate


def test_a_rule_that_does_not_parse_fails_loudly():
    with pytest.raises(kube_schema.RuleCompileError):
        kube_schema.compile_rule("self.all(a, ")


# --- the CEL verdict is the models' verdict ---------------------------------------------------

REFUSED, ALLOWED, AGREE = "refused", "allowed", "agree"
OPERATOR = "operator"  # the API server lets it through; the model (the operator) refuses it

# (case, spec, expected verdict, where the cause is). AGREE: only the agreement is required;
# these are holes both share (prefix match on the exact spelling), kept visible on purpose.
CASES = [
    ("no-args", {}, ALLOWED, None),
    ("cache-gcsfuse-without-bucket", {"cache": {"type": "gcsfuse"}}, REFUSED, "spec.cache"),
    ("cache-gcsfuse-with-bucket", {"cache": {"type": "gcsfuse", "bucket": "models"}}, ALLOWED, None),
    ("chat-template-inline", {"chatTemplate": {"inline": "{{ messages }}"}}, ALLOWED, None),
    ("chat-template-config-map", {"chatTemplate": {"configMapRef": {"name": "t", "key": "k"}}}, ALLOWED, None),
    ("chat-template-both", {"chatTemplate": {"inline": "x", "configMapRef": {"name": "t", "key": "k"}}}, REFUSED,
     "spec.chatTemplate"),
    ("chat-template-neither", {"chatTemplate": {}}, REFUSED, "spec.chatTemplate"),
    ("cache-pvc", {"cache": {"type": "pvc", "accessModes": ["ReadWriteMany"]}}, ALLOWED, None),
    ("cache-bucket-only", {"cache": {"bucket": "models"}}, ALLOWED, None),
    ("empty-args", {"extraArgs": []}, ALLOWED, None),
    ("harmless-flag", {"extraArgs": ["--enable-prefix-caching"]}, ALLOWED, None),
    ("harmless-flag-value", {"extraArgs": ["--max-num-seqs=8", "--gpu-memory-utilization", "0.85"]}, ALLOWED, None),
    ("llamacpp-hf-repo-flag", {"extraArgs": ["-hf", "ggml-org/gemma-3-1b-it-GGUF"]}, ALLOWED, None),
    ("flag-name-without-dashes", {"extraArgs": ["trust-remote-code"]}, ALLOWED, None),
    ("value-mentions-a-flag", {"extraArgs": ["--served-model-name=--trust-remote-code"]}, ALLOWED, None),
    ("shorter-than-a-flag", {"extraArgs": ["--hf-toke"]}, OPERATOR, None),  # argparse: an abbreviation
    *[(f"refused{flag}", {"extraArgs": [flag]}, REFUSED, "spec.extraArgs") for flag in REFUSED_FLAGS],
    *[(f"refused{flag}=value", {"extraArgs": [f"{flag}=x"]}, REFUSED, "spec.extraArgs") for flag in REFUSED_FLAGS],
    ("refused-flag-then-value", {"extraArgs": ["--hf-token", "hf_abc"]}, REFUSED, "spec.extraArgs"),
    ("refused-after-harmless", {"extraArgs": ["--enable-prefix-caching", "--trust-remote-code"]}, REFUSED,
     "spec.extraArgs"),
    # Near misses that start with a refused flag: refused by both (a prefix match, on purpose).
    ("near-miss-codex", {"extraArgs": ["--trust-remote-codex"]}, REFUSED, "spec.extraArgs"),
    ("near-miss-hftx", {"extraArgs": ["-hftx"]}, REFUSED, "spec.extraArgs"),
    ("near-miss-hf-token-path", {"extraArgs": ["--hf-token-path=/t"]}, REFUSED, "spec.extraArgs"),
    # Spellings vLLM's parser reads as a refused flag (checked with vLLM 0.32.0's parser):
    # `_` for `-` (the CEL rule lists them), and argparse's unambiguous abbreviations (only the
    # operator: a rule for them would cost too much in kube-apiserver's CEL estimate).
    ("underscores", {"extraArgs": ["--trust_remote_code"]}, REFUSED, "spec.extraArgs"),
    ("underscores-mixed", {"extraArgs": ["--allowed-local_media-path=/"]}, REFUSED, "spec.extraArgs"),
    ("underscores-value", {"extraArgs": ["--hf_token=hf_abc"]}, REFUSED, "spec.extraArgs"),
    ("abbreviation", {"extraArgs": ["--trust-remote"]}, OPERATOR, None),
    ("abbreviation-mixed", {"extraArgs": ["--allowed_local-med=/"]}, OPERATOR, None),
    ("abbreviation-value", {"extraArgs": ["--hf-tok=hf_abc"]}, OPERATOR, None),
    ("other-flag-sharing-a-prefix", {"extraArgs": ["--allowed-origins=[]"]}, ALLOWED, None),
    ("help-is-not-hft", {"extraArgs": ["--help-x"]}, ALLOWED, None),
    # Spellings no parser reads as a flag (argparse: unknown option or a positional): both allow.
    ("upper-case", {"extraArgs": ["--TRUST-REMOTE-CODE"]}, AGREE, None),
    ("leading-space", {"extraArgs": [" --trust-remote-code"]}, AGREE, None),
    # map keys (nodeSelector, resources.requests, resources.limits): qualified names of at most 317
    *[case for where, value, wrap in (("spec.nodeSelector", "v", lambda m: {"nodeSelector": m}),
                                      ("spec.resources.requests", "1", lambda m: {"resources": {"requests": m}}),
                                      ("spec.resources.limits", 1, lambda m: {"resources": {"limits": m}}))
      for case in (
          (f"{where}-plain-key", wrap({"pool": value}), ALLOWED, None),
          (f"{where}-prefixed-key", wrap({"cloud.google.com/gke-nodepool": value, "nvidia.com/gpu": value}), ALLOWED,
           None),
          (f"{where}-underscore-in-name", wrap({"example.com/foo_bar": value}), ALLOWED, None),
          (f"{where}-longest-key", wrap({"a" * 253 + "/" + "b" * 63: value}), ALLOWED, None),
          (f"{where}-key-one-too-long", wrap({"a" * 254 + "/" + "b" * 63: value}), REFUSED, where),
          (f"{where}-huge-key", wrap({"k" * 100_000: value}), REFUSED, where),
          (f"{where}-name-of-64", wrap({"b" * 64: value}), REFUSED, where),
          (f"{where}-space", wrap({"not a key": value}), REFUSED, where),
          (f"{where}-upper-case-prefix", wrap({"Example.com/x": value}), REFUSED, where),
          (f"{where}-empty-prefix", wrap({"/x": value}), REFUSED, where),
          (f"{where}-empty-name", wrap({"example.com/": value}), REFUSED, where),
          (f"{where}-leading-dash", wrap({"-x": value}), REFUSED, where),
          (f"{where}-trailing-newline", wrap({"x\n": value}), REFUSED, where),
          (f"{where}-non-ascii", wrap({"é": value}), REFUSED, where),
          (f"{where}-one-bad-key-of-two", wrap({"ok": value, "not ok": value}), REFUSED, where),
      )],
    # env
    ("env-other-name", {"env": [{"name": "HF_HOME", "value": "/cache"}]}, ALLOWED, None),
    ("env-token-name-lower-case", {"env": [{"name": "hf_token", "value": "x"}]}, ALLOWED, None),
    ("env-token-path", {"env": [{"name": "HF_TOKEN_PATH", "value": "/var/run/token"}]}, ALLOWED, None),
    ("env-token-from-secret", {"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     ALLOWED, None),
    ("env-hub-token-from-secret",
     {"env": [{"name": "HUGGING_FACE_HUB_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     ALLOWED, None),
    ("env-token-name-only", {"env": [{"name": "HF_TOKEN"}]}, ALLOWED, None),
    ("env-token-literal", {"env": [{"name": "HF_TOKEN", "value": "hf_abc"}]}, REFUSED, "spec.env[0]"),
    ("env-token-empty-literal", {"env": [{"name": "HF_TOKEN", "value": ""}]}, REFUSED, "spec.env[0]"),
    ("env-hub-token-literal", {"env": [{"name": "HUGGING_FACE_HUB_TOKEN", "value": "hf_abc"}]}, REFUSED, "spec.env[0]"),
    ("env-token-literal-and-from",
     {"env": [{"name": "HF_TOKEN", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     REFUSED, "spec.env[0]"),
    # adapters: a Hugging Face repo (and revision), or a bucket and a path
    ("adapter-repo", {"adapters": [{"name": "a", "repo": "acme/lora"}]}, ALLOWED, None),
    ("adapter-repo-revision", {"adapters": [{"name": "a", "repo": "acme/lora", "revision": "v2"}]}, ALLOWED, None),
    ("adapter-bucket", {"adapters": [{"name": "a", "bucket": "loras", "path": "a/b"}]}, ALLOWED, None),
    ("adapter-no-source", {"adapters": [{"name": "a"}]}, REFUSED, "spec.adapters[0]"),
    ("adapter-both", {"adapters": [{"name": "a", "repo": "acme/lora", "bucket": "loras", "path": "a"}]}, REFUSED,
     "spec.adapters[0]"),
    ("adapter-bucket-no-path", {"adapters": [{"name": "a", "bucket": "loras"}]}, REFUSED, "spec.adapters[0]"),
    ("adapter-bucket-revision", {"adapters": [{"name": "a", "bucket": "loras", "path": "a", "revision": "v2"}]},
     REFUSED, "spec.adapters[0]"),
    ("adapter-second", {"adapters": [{"name": "a", "repo": "acme/lora"}, {"name": "b", "path": "x"}]}, REFUSED,
     "spec.adapters[1]"),
    ("env-token-second", {"env": [{"name": "A", "value": "1"}, {"name": "HF_TOKEN", "value": "x"}]}, REFUSED,
     "spec.env[1]"),
]


def model_verdict(spec: dict[str, Any]) -> str:
    try:
        GemmaDeploymentSpec.model_validate(spec)
    except ValidationError:
        return REFUSED
    return ALLOWED


def server_causes(spec: dict[str, Any]) -> list[dict[str, str]]:
    """What the test API server answers for a GemmaDeployment with this spec: prune, default, validate."""
    schema = open_api_schema()
    obj = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "metadata": {"name": "chat"},
           "spec": copy.deepcopy(spec)}  # fmt: skip
    kube_schema.prune(schema, obj)
    kube_schema.default(schema, obj)
    return kube_schema.validate(schema, obj)


@pytest.mark.parametrize("name, spec, expected, field", CASES, ids=[case[0] for case in CASES])
def test_cel_verdict_is_the_models_verdict(name, spec, expected, field):
    causes = server_causes(spec)
    cel = REFUSED if causes else ALLOWED
    if expected == OPERATOR:
        assert (cel, model_verdict(spec)) == (ALLOWED, REFUSED), causes
        return
    assert cel == model_verdict(spec), causes
    if expected != AGREE:
        assert cel == expected, causes
    if cel == REFUSED:
        node, rule = rule_at(field)
        # Worded as kube-apiserver words a failed rule: field.Invalid(path, schema type, message).
        assert causes == [{"reason": "FieldValueInvalid", "field": field,
                           "message": f'Invalid value: "{node["type"]}": {rule["message"]}'}]


def test_every_failing_rule_is_reported():
    causes = server_causes({"extraArgs": ["-hft", "x"], "env": [{"name": "HF_TOKEN", "value": "x"},
                                                                {"name": "HUGGING_FACE_HUB_TOKEN", "value": "y"}]})
    assert [c["field"] for c in causes] == ["spec.extraArgs", "spec.env[0]", "spec.env[1]"]


def test_rules_wait_for_a_valid_shape():
    """As kube-apiserver: a blocking schema error (here maxItems) skips the rules, with a note."""
    causes = server_causes({"extraArgs": ["--trust-remote-code"] * 65})
    assert [c["field"] for c in causes] == ["spec.extraArgs", "<nil>"]
    assert "some validation rules were not checked" in causes[-1]["message"]


def test_absent_keys_are_absent_to_has():
    """Objects are CEL maps: `has()` on a missing key is false, not an error."""
    item = open_api_schema()["properties"]["spec"]["properties"]["env"]["items"]

    def has(field: str, value: dict[str, Any]) -> bool:
        result = kube_schema.evaluate(f"has(self.{field})", kube_schema.to_cel(item, value))
        assert isinstance(result, kube_schema.celtypes.BoolType)
        return bool(result)

    assert not has("value", {"name": "HF_TOKEN"})
    assert has("value", {"name": "HF_TOKEN", "value": ""})
    assert has("valueFrom", {"name": "A", "valueFrom": {}})
    assert not has("valueFrom", {"name": "A", "value": "x"})


# --- cost: every rule walks bounded data -------------------------------------------------------
#
# kube-apiserver estimates each rule's worst-case cost when the CRD is written and refuses rules
# over its limits; at run time it stops a rule that spends more than its per-call limit. The
# estimate below is a rough upper bound in cel-go's units, from the schema's bounds.

# cel-go: a string function costs about 1 + ceil(StringTraversalCostFactor * length) ...
STRING_TRAVERSAL_COST_FACTOR = 0.1
# ... and `matches` about ceil(RegexStringLengthCostFactor * length) * ceil(factor * regex length).
REGEX_STRING_LENGTH_COST_FACTOR = 0.25
# k8s.io/apiserver/pkg/apis/cel: the runtime limit of one evaluation of one rule.
PER_CALL_LIMIT = 1_000_000
# apiextensions validation: a rule's estimated cost, times how often it can run (the maxItems /
# maxProperties of the lists and maps above it), must stay under this or the CRD is refused.
STATIC_ESTIMATED_COST_LIMIT = 10_000_000
# k8s.io/apiserver/pkg/apis/cel: the runtime budget for all rules of one object.
RUNTIME_CEL_COST_BUDGET = 10_000_000

MACRO_ON_SELF = re.compile(r"\bself\.(all|exists|exists_one|map|filter)\(\s*(\w+)\s*,")
CALL = re.compile(r"\b([A-Za-z_]\w*)\(")
STRING_CALLS = re.compile(r"\.(?:startsWith|endsWith|contains|size)\(|\bsize\(")
LITERAL = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
COMPARISONS = re.compile(r"==|!=")
LITERAL_COMPARISONS = re.compile(rf"(?:==|!=)\s*({LITERAL})|({LITERAL})\s*(?:==|!=)")
MATCHES = re.compile(rf"\.matches\(\s*({LITERAL})\s*\)")
# Functions the estimate understands; a rule using another one must extend it first.
KNOWN_CALLS = {"all", "exists", "startsWith", "endsWith", "contains", "size", "has", "matches"}
OVERHEAD = 10  # selects, has(), `!`, `&&`, `||` and the comprehension's own steps, per evaluation of a body


def iteration(node: dict[str, Any], expression: str) -> tuple[int | None, int | None] | None:
    """For a macro over `self`: (how many elements, how long an element string can be), or None.

    Over a list: maxItems, and the items' maxLength when they are strings. Over a map: maxProperties,
    and the keys' length, which a structural schema cannot bound: the rule must do it first thing
    (`size(k) <= N && ...`), so that a long key stops there at run time.
    """
    macro = MACRO_ON_SELF.search(expression)
    if macro is None:
        return None
    if node.get("type") == "array":
        items = node.get("items", {})
        return node.get("maxItems"), items.get("maxLength") if items.get("type") == "string" else None
    guard = re.match(rf"\s*size\({macro.group(2)}\)\s*<=\s*(\d+)\s*&&", expression[macro.end():])
    return node.get("maxProperties"), int(guard.group(1)) if guard else None


def reached(node: dict[str, Any], expression: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The schema nodes a rule reads: `self`, then list items, map values, and the properties it names."""
    yield "self", node
    todo = [("self", node)]
    while todo:
        where, current = todo.pop()
        children = []
        if "items" in current:
            children.append((f"{where}[]", current["items"]))
        if isinstance(current.get("additionalProperties"), dict):
            children.append((f"{where}.*", current["additionalProperties"]))
        for name, child in current.get("properties", {}).items():
            if re.search(rf"\.{re.escape(kube_schema.escape(name) or '')}\b", expression):
                children.append((f"{where}.{name}", child))
        for child in children:
            yield child
            todo.append(child)


def unbounded(node: dict[str, Any]) -> str | None:
    if node.get("type") == "array" and "maxItems" not in node:
        return "a list without maxItems"
    if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
        return "a map without maxProperties"
    if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
        return "a string without maxLength"
    if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
        return "an object of unknown fields"
    return None


def cardinality(ancestors: tuple) -> int:
    """How many times a rule can run per object: the product of the bounds of the lists and maps above it."""
    times = 1
    for node in ancestors:
        if node.get("type") == "array":
            times *= node["maxItems"]
        elif isinstance(node.get("additionalProperties"), dict):
            times *= node["maxProperties"]
    return times


def estimated_cost(node: dict[str, Any], expression: str) -> int:
    """A rough upper bound of one evaluation, in cel-go cost units: every string operation is
    charged for the longest string the rule can reach, a comparison with a literal for the literal."""
    lengths = [n["maxLength"] for _, n in reached(node, expression) if n.get("type") == "string" and "maxLength" in n]
    loop = iteration(node, expression)
    if loop is not None and loop[1] is not None:
        lengths.append(loop[1])
    longest = max(lengths, default=0)

    def traversal(length: int, factor: float = STRING_TRAVERSAL_COST_FACTOR) -> int:
        return math.ceil(factor * length)

    literal_comparisons = LITERAL_COMPARISONS.findall(expression)
    body = OVERHEAD
    body += len(STRING_CALLS.findall(expression)) * (1 + traversal(longest))
    body += (len(COMPARISONS.findall(expression)) - len(literal_comparisons)) * (1 + traversal(longest))
    body += sum(1 + traversal(len(a or b) - 2) for a, b in literal_comparisons)
    for regex in MATCHES.findall(expression):
        body += 1 + traversal(longest, REGEX_STRING_LENGTH_COST_FACTOR) * traversal(
            len(regex) - 2, REGEX_STRING_LENGTH_COST_FACTOR)
    return (loop[0] if loop is not None else 1) * body + 1


@pytest.mark.parametrize("path, node, rule, ancestors", RULES, ids=RULE_IDS)
def test_rule_reads_only_bounded_data(path, node, rule, ancestors):
    expression = rule["rule"]
    assert set(CALL.findall(expression)) <= KNOWN_CALLS, f"{path}: extend estimated_cost for {expression}"
    loop = iteration(node, expression)
    if loop is not None:
        count, length = loop
        assert count, f"{path}: the rule iterates a list or map without maxItems / maxProperties"
        is_map = node.get("type") != "array"
        if is_map or node.get("items", {}).get("type") == "string":
            assert length, f"{path}: the rule iterates {'keys' if is_map else 'strings'} of no bounded length"
    for where, child in reached(node, expression):
        problem = unbounded(child)
        assert problem is None, f"{path}: the rule reads {where}, {problem}"
    for ancestor in ancestors:
        # A rule under a list or map runs once per element: those need bounds too.
        assert unbounded(ancestor) in (None, "an object of unknown fields"), f"{path}: above it is {unbounded(ancestor)}"


@pytest.mark.parametrize("path, node, rule, ancestors", RULES, ids=RULE_IDS)
def test_rule_cost_is_far_below_the_limits(path, node, rule, ancestors):
    cost = estimated_cost(node, rule["rule"])
    # Even an object at every bound (64 arguments of 4096 characters) stays under the runtime limit.
    assert cost * 2 <= PER_CALL_LIMIT, f"{path}: one evaluation may cost {cost}"
    assert cost * cardinality(ancestors) * 10 <= STATIC_ESTIMATED_COST_LIMIT, (
        f"{path}: {cost} x {cardinality(ancestors)} evaluations")


def test_extra_args_rule_bound():
    """The rule that walks the most: 64 arguments of at most 4096 characters each."""
    extra_args = open_api_schema()["properties"]["spec"]["properties"]["extraArgs"]
    max_items, max_length = extra_args["maxItems"], extra_args["items"]["maxLength"]
    assert (max_items, max_length) == (64, 4096)
    # Every character of every argument read once: 262,144.
    assert max_items * max_length * 3 < PER_CALL_LIMIT
    # In cel-go's units, one startsWith per refused spelling (15) over each argument: about 395,000.
    (rule,) = [r for p, _, r, _ in RULES if p == ".spec.extraArgs"]
    cost = estimated_cost(extra_args, rule["rule"])
    assert cost == max_items * (len(REFUSED_SPELLINGS) * (1 + math.ceil(max_length / 10)) + OVERHEAD) + 1
    assert cost * 2 < PER_CALL_LIMIT and cost * 25 < STATIC_ESTIMATED_COST_LIMIT


def test_the_estimate_notices_unbounded_data():
    string = {"type": "string"}
    assert unbounded({"type": "array", "items": string}) == "a list without maxItems"
    assert unbounded(string) == "a string without maxLength"
    assert iteration({"type": "object", "maxProperties": 8, "additionalProperties": string},
                     "self.all(k, k.matches('^a$'))") == (8, None)
    assert iteration({"type": "object", "maxProperties": 8, "additionalProperties": string},
                     "self.all(k, size(k) <= 63 && k.matches('^a$'))") == (8, 63)


def test_all_rules_together_fit_the_runtime_budget():
    total = sum(estimated_cost(node, rule["rule"]) * cardinality(ancestors) for _, node, rule, ancestors in RULES)
    assert total * 10 <= RUNTIME_CEL_COST_BUDGET, total
