"""spec.chatTemplate, checked before it runs: parsed and rendered in jinja2's sandbox, as the servers
render it (transformers' apply_chat_template, which vLLM calls, compiles chat templates in an
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop controls; so does this). Pure.

`prompt` says what a sample conversation (system, user, assistant, user) becomes: with an override,
the override rendered; without one, the family's own turn format from the catalog. How the template
reaches the pod: `args` and `volume`.

A configMapRef in the running operator: the reconcile reads the ConfigMap by name (`Source`), and
`refusal` says why it cannot be used (absent, no such key, a template that does not parse or render),
in which case nothing is applied and the pods keep the template they started with. `stamp` puts the
digest of the key's content on the pod template (DIGEST), so that an edit of that key rolls the model
pods and an edit of another key, or none, restarts nothing; `named` words that change for the
RollingOut Event. The resync re-reads the referenced ConfigMaps (resync.py says why not a watch).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .api.v1alpha1 import ChatTemplate, ConfigMapKeyRef, GemmaDeploymentSpec
from .catalog import Family, TurnFormat
from .plans import InvalidSpec
from .sentences import sentence

SAMPLE: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is Gemma?"},
    {"role": "assistant", "content": "A family of open models from Google."},
    {"role": "user", "content": "Which sizes are there?"},
)
# Where a configMapRef template is mounted in the model pod, and the file name it gets there.
MOUNT_DIR = "/etc/gemma-operator/chat-template"
FILE = "chat_template.jinja"
VOLUME = "chat-template"
# On the model pods' template: the digest of the configMapRef key's content they run with.
DIGEST = "gemma.dev/chat-template-digest"
REFUSED = "InvalidChatTemplate"  # the conditions' reason while the referenced template does not parse


class _TemplateError(Exception):
    """raise_exception() in a template: what the template itself refuses."""


def _raise(message: str) -> None:
    raise _TemplateError(message)


def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent, ensure_ascii=False)
    env.globals["raise_exception"] = _raise
    return env


@dataclass(frozen=True)
class Prompt:
    """What the sample conversation becomes, and whose template made it."""

    source: str
    text: str | None  # None: not checked here (a ConfigMap `plan` was not given)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "messages": [dict(m) for m in SAMPLE]}
        if self.text is not None:
            out["prompt"] = self.text
        if self.note:
            out["note"] = self.note
        return out


def where(template: ChatTemplate) -> tuple[str, str]:
    """(the spec field, what an error message calls it) of an override."""
    if template.inline is not None:
        return "chatTemplate.inline", ""
    ref = template.config_map_ref
    assert ref is not None
    return "chatTemplate.configMapRef", f"ConfigMap {ref.name}, key {ref.key}: "


def render_sample(text: str, field: str, name: str = "", bos: str = "<bos>") -> tuple[str, str]:
    """(the sample conversation through the template, a note); InvalidSpec naming the line of a
    syntax error, or what failed when it ran. A template that refuses a system turn (Gemma 2's own)
    is given the conversation without one."""
    try:
        template = environment().from_string(text)
    except jinja2.TemplateSyntaxError as err:
        raise InvalidSpec(field, f"{name}line {err.lineno}: {err.message}") from None
    note = ""
    for messages in (SAMPLE, SAMPLE[1:]):
        try:
            return template.render(messages=[dict(m) for m in messages], bos_token=bos, eos_token="<eos>",
                                   add_generation_prompt=True), note  # fmt: skip
        except _TemplateError as err:
            if messages is not SAMPLE:
                raise InvalidSpec(field, f"{name}the template refuses the sample conversation: {err}") from None
            note = f"the template refuses a system turn ({err}); shown without it"
        except jinja2.TemplateError as err:  # undefined names, sandbox refusals
            raise InvalidSpec(field, f"{name}rendering the sample conversation fails{_line(err)}: {err}") from None
    raise AssertionError("unreachable")


def _line(err: Exception) -> str:
    tb = err.__traceback__
    lineno = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {lineno}" if lineno else ""


def default_sample(turns: TurnFormat) -> str:
    """The sample in the family's own format: what the checkpoint's template gives it."""
    messages = list(SAMPLE)
    out = turns.bos
    if turns.system == "first_user_turn" and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
        messages[0] = {"role": "user", "content": f"{system}\n\n{messages[0]['content']}"}
    roles = {"system": "system", "user": turns.user_role, "assistant": turns.model_role}
    for message in messages:
        out += f"{turns.turn_start}{roles[message['role']]}\n{message['content']}{turns.turn_end}\n"
    return out + f"{turns.turn_start}{turns.model_role}\n"


def check(spec: GemmaDeploymentSpec, config_map: Mapping[str, str] | None = None) -> None:
    """Refuse an override that does not parse or render. `config_map`: the data of the ConfigMap
    spec.chatTemplate.configMapRef names, once the caller has read it (the operator, or `plan` given it)."""
    template = spec.chat_template
    if template is None:
        return
    field, name = where(template)
    if template.inline is not None:
        render_sample(template.inline, field)
        return
    if config_map is None:
        return
    ref = template.config_map_ref
    assert ref is not None
    if ref.key not in config_map:
        raise InvalidSpec(field, f"ConfigMap {ref.name} has no key {ref.key!r}; it has {', '.join(sorted(config_map)) or 'none'}")
    render_sample(config_map[ref.key], field, name)


def prompt(spec: GemmaDeploymentSpec, family: Family, tuning: str,
           config_maps: Mapping[str, Mapping[str, str]] | None = None) -> Prompt | None:  # fmt: skip
    """What the sample conversation becomes on the server; None for an embedding model (no conversation:
    /v1/embeddings takes text; a chatTemplate on one is refused in request.py). `config_maps`: name -> data
    of the ConfigMaps at hand (`plan`: those in its files)."""
    if family.task == "embed":
        return None
    template = spec.chat_template
    if template is not None:
        field, name = where(template)
        if template.inline is not None:
            return Prompt("spec.chatTemplate.inline", *render_sample(template.inline, field))
        ref = template.config_map_ref
        assert ref is not None
        data = (config_maps or {}).get(ref.name)
        if data is None:
            return Prompt(name, None, f"ConfigMap {ref.name} is not in the files given; the operator checks it on the cluster")
        check(spec, data)
        return Prompt(f"ConfigMap {ref.name}, key {ref.key}", *render_sample(data[ref.key], field, name))
    if tuning != "it":
        return Prompt("none", None, "a pre-trained checkpoint has no chat template: clients call /v1/completions")
    if not family.chat_template:
        return Prompt("none", None, f"{family.display_name} has no chat template: its request format is in the reasons")
    if family.turn_format is None:
        return Prompt("the checkpoint's template", None, "the catalog does not record this family's turn format")
    turns = family.turn_format
    return Prompt(f"the checkpoint's template ({turns.turn_start} turns, {turns.source})", default_sample(turns))


def args(spec: GemmaDeploymentSpec, runtime: str) -> list[str]:
    """The override as the server takes it. inline: the template text itself as one argument (vLLM's
    --chat-template reads a path, else a text with Jinja characters as the template; llama-server's
    --chat-template takes any template after --jinja); configMapRef: the mounted file."""
    template = spec.chat_template
    if template is None:
        return []
    if template.inline is not None:
        return ["--chat-template", template.inline]
    return ["--chat-template" if runtime == "vllm" else "--chat-template-file", f"{MOUNT_DIR}/{FILE}"]


def config_map_ref(spec: GemmaDeploymentSpec) -> ConfigMapKeyRef | None:
    """spec.chatTemplate.configMapRef, if the spec has one."""
    return spec.chat_template.config_map_ref if spec.chat_template is not None else None


def volume(spec: GemmaDeploymentSpec) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """configMapRef: the one key, mounted read-only as a file; None otherwise."""
    ref = config_map_ref(spec)
    if ref is None:
        return None
    vol = {"name": VOLUME, "configMap": {"name": ref.name, "items": [{"key": ref.key, "path": FILE}]}}
    return vol, {"name": VOLUME, "mountPath": MOUNT_DIR, "readOnly": True}


# ----------------------------------------------------------------- configMapRef in the operator
@dataclass(frozen=True)
class Source:
    """The ConfigMap spec.chatTemplate.configMapRef names, as the reconcile read it."""

    name: str
    data: Mapping[str, str] | None  # None: there is no such ConfigMap


def referenced(spec: Mapping[str, Any]) -> str | None:
    """The name of the ConfigMap a raw spec's chatTemplate refers to, if any."""
    ref = (spec.get("chatTemplate") or {}).get("configMapRef") or {}
    return ref.get("name") or None


def content_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def refusal(spec: GemmaDeploymentSpec, source: Source | None, namespace: str,
            every_s: float) -> tuple[str, str, str, str] | None:  # fmt: skip
    """(outcome, reason, message, what the operator does next) when the referenced template cannot be
    used; None when it can, when there is no configMapRef, or when it was not read. A missing ConfigMap
    or key is ApplyFailed (it may appear), a template that does not parse or render is Invalid; either
    way the reconcile reads the ConfigMap again in `every_s` seconds."""
    ref = config_map_ref(spec)
    if ref is None or source is None or source.name != ref.name:
        return None
    keep = "Nothing is changed until it is fixed; model pods already running keep the template they started with."
    rereads = (f"The operator reads ConfigMap {ref.name!r} again every {every_s:g} s; it applies nothing until key "
               f"{ref.key!r} there holds a template that parses and renders.")
    if source.data is None:
        return ("ApplyFailed", "ChatTemplateNotFound",
                f"ConfigMap {ref.name!r} (spec.chatTemplate.configMapRef) does not exist in namespace {namespace}: "
                f"create it with the chat template under key {ref.key!r}. {keep}", rereads)  # fmt: skip
    if ref.key not in source.data:
        keys = ", ".join(sorted(source.data)) or "none"
        return ("ApplyFailed", "ChatTemplateNotFound",
                f"ConfigMap {ref.name!r} (spec.chatTemplate.configMapRef) has no key {ref.key!r} (its keys: {keys}). "
                f"{keep}", rereads)  # fmt: skip
    try:
        check(spec, source.data)
    except InvalidSpec as exc:
        return "Invalid", REFUSED, f"Invalid spec: {sentence(str(exc))} {keep}", rereads
    return None


def stamp(template: dict[str, Any], spec: GemmaDeploymentSpec, source: Source | None) -> str | None:
    """Put the digest of the referenced key's content on a pod template; returns it (None: no
    configMapRef, or not read)."""
    ref = config_map_ref(spec)
    if ref is None or source is None or source.data is None or ref.key not in source.data:
        return None
    digest = content_digest(source.data[ref.key])
    template.setdefault("metadata", {}).setdefault("annotations", {})[DIGEST] = digest
    return digest


def shaping(spec_fields: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """The spec fields a pod template is rendered for (rollout.spec_hash), with the stamped content's
    digest: it shapes the template as the spec does, so a change is the owner's, and rolls out."""
    digest = ((template.get("metadata") or {}).get("annotations") or {}).get(DIGEST)
    return {**spec_fields, **({"chatTemplateDigest": digest} if digest else {})}


def named(change: str | None, spec: GemmaDeploymentSpec) -> str | None:
    """A rollout's first change in words, when it is the referenced template's content."""
    ref = config_map_ref(spec)
    if ref is None or change is None:
        return change
    if change.startswith(f"metadata.annotations.{DIGEST}: (unset)") or (
            change.startswith("metadata.annotations: (unset)") and DIGEST in change):  # fmt: skip
        # Pods of an earlier release, which never rolled them on an edit: they may run an older template.
        return f"chat template from ConfigMap {ref.name} key {ref.key}, not tracked on the running pods yet"
    if change.startswith(f"metadata.annotations.{DIGEST}:"):
        return f"chat template from ConfigMap {ref.name} key {ref.key} changed"
    return change
