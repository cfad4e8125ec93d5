"""spec.chatTemplate (issue 18, part 5): parsed in jinja2's sandbox before it runs, the sample prompt
`plan` prints, and how the override reaches each server."""

from __future__ import annotations

import json

import pydantic
import pytest
import yaml

from gemma_operator import chat_template
from gemma_operator.__main__ import main
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import InvalidSpec, Plan, plan
from gemma_operator.render import render
from tests.conftest import NODES, node_list

MARKED = ("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|model|>{% endif %}")  # fmt: skip
# Gemma 2's own template refuses a system turn with raise_exception, as HF templates do.
NO_SYSTEM = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
             "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")  # fmt: skip


def spec_with(template: dict | None, **more) -> GemmaDeploymentSpec:
    return GemmaDeploymentSpec.model_validate({**({"chatTemplate": template} if template is not None else {}), **more})


def container(catalog, spec: GemmaDeploymentSpec, fixture: str) -> tuple[dict, dict]:
    result = plan(spec, pools(node_list(fixture), catalog), catalog)
    assert isinstance(result, Plan), getattr(result, "message", result)
    deployment = next(o for o in render(result, "chat", "team-a", spec) if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    return pod["containers"][0], pod


# (template text) -> the InvalidSpec message: the field, and the line.
BROKEN = [
    ("{% for m in messages %}\n{{ m.content }\n{% endfor %}", "spec.chatTemplate.inline: line 2: unexpected '}'"),
    ("line one\n\n{% if add_generation_prompt %}", "spec.chatTemplate.inline: line 3: Unexpected end of template"),
    ("{{ messages.__class__.__mro__ }}", "spec.chatTemplate.inline: rendering the sample conversation fails at "
                                         "line 1: access to attribute '__class__' of 'list' object is unsafe"),
    ("ok\n{{ no_such_thing.attr }}", "spec.chatTemplate.inline: rendering the sample conversation fails at line 2: "
                                     "'no_such_thing' is undefined"),
    ("{{ raise_exception('never') }}", "spec.chatTemplate.inline: the template refuses the sample conversation: never"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BROKEN, ids=[m for _, m in BROKEN])
def test_a_broken_inline_template_is_invalid_naming_the_line(catalog, text, message):
    with pytest.raises(InvalidSpec) as err:
        plan(spec_with({"inline": text}), pools(node_list("gke-l4"), catalog), catalog)
    assert str(err.value).startswith(message), str(err.value)


def test_the_sandbox_is_immutable():
    with pytest.raises(InvalidSpec, match="unsafe"):
        chat_template.render_sample("{% set _ = messages.append(1) %}", "chatTemplate.inline")


def test_a_template_refusing_a_system_turn_is_shown_without_one():
    text, note = chat_template.render_sample(NO_SYSTEM, "chatTemplate.inline")
    assert text.startswith("[user] What is Gemma?") and "system" not in text
    assert "refuses a system turn (System role not supported)" in note


def test_a_configmap_template_is_checked_once_read():
    spec = spec_with({"configMapRef": {"name": "tpl", "key": "chat.jinja"}})
    chat_template.check(spec)  # not read yet: nothing to check
    chat_template.check(spec, {"chat.jinja": MARKED})
    with pytest.raises(InvalidSpec, match=r"spec.chatTemplate.configMapRef: ConfigMap tpl, key chat.jinja: line 1: "):
        chat_template.check(spec, {"chat.jinja": "{% if %}"})
    with pytest.raises(InvalidSpec, match="ConfigMap tpl has no key 'chat.jinja'; it has other"):
        chat_template.check(spec, {"other": MARKED})


def test_exactly_one_source():
    with pytest.raises(pydantic.ValidationError, match="exactly one of inline or configMapRef"):
        spec_with({})
    with pytest.raises(pydantic.ValidationError, match="exactly one of inline or configMapRef"):
        spec_with({"inline": "x", "configMapRef": {"name": "a", "key": "b"}})


# The family's own turn format, from the catalog: what the sample becomes without an override.
DEFAULTS = [
    ("gemma3", "<bos><start_of_turn>user\nYou are a concise assistant.\n\nWhat is Gemma?<end_of_turn>\n"
               "<start_of_turn>model\nA family of open models from Google.<end_of_turn>\n"
               "<start_of_turn>user\nWhich sizes are there?<end_of_turn>\n<start_of_turn>model\n"),
    ("gemma2", "<bos><start_of_turn>user\nYou are a concise assistant.\n\nWhat is Gemma?<end_of_turn>\n"
               "<start_of_turn>model\nA family of open models from Google.<end_of_turn>\n"
               "<start_of_turn>user\nWhich sizes are there?<end_of_turn>\n<start_of_turn>model\n"),
    ("gemma4", "<bos><|turn>system\nYou are a concise assistant.<turn|>\n<|turn>user\nWhat is Gemma?<turn|>\n"
               "<|turn>model\nA family of open models from Google.<turn|>\n"
               "<|turn>user\nWhich sizes are there?<turn|>\n<|turn>model\n"),
]  # fmt: skip


@pytest.mark.parametrize(("family", "expected"), DEFAULTS, ids=[f for f, _ in DEFAULTS])
def test_without_an_override_the_sample_uses_the_familys_turn_format(catalog, family, expected):
    got = chat_template.prompt(GemmaDeploymentSpec(), catalog.families[family], "it")
    assert got.text == expected
    assert str(catalog.families[family].turn_format.source).startswith("https://ai.google.dev/gemma/docs/core/")


def test_every_chat_family_records_its_turn_format(catalog):
    assert [f for f, fam in catalog.families.items() if fam.chat_template and fam.turn_format is None] == []


def test_inline_reaches_both_servers_as_one_argument(catalog):
    spec = spec_with({"inline": MARKED}, model={"family": "gemma3", "size": "1b"})
    vllm, _ = container(catalog, spec, "gke-l4")
    assert vllm["args"][vllm["args"].index("--chat-template") + 1] == MARKED
    llama, _ = container(catalog, spec, "gke-cpu-only")
    argv = llama["args"]
    assert argv[argv.index("--chat-template") + 1] == MARKED
    assert argv.index("--jinja") < argv.index("--chat-template")  # llama-server takes any template only after --jinja


def test_a_pretrained_model_with_an_override_gets_jinja_too(catalog):
    # A pre-trained fine-tune's GGUF (no catalog GGUF of gemma3 1b pt): no --jinja of its own.
    spec = spec_with({"inline": MARKED}, model={"id": "acme/gemma-3-1b-pt-gguf", "family": "gemma3", "size": "1b",
                                                "tuning": "pt"}, accelerator="cpu")  # fmt: skip
    argv = container(catalog, spec, "gke-cpu-only")[0]["args"]
    assert argv.index("--jinja") < argv.index("--chat-template")


def test_a_configmap_is_mounted_and_named_by_path(catalog):
    spec = spec_with({"configMapRef": {"name": "tpl", "key": "chat.jinja"}}, model={"family": "gemma3", "size": "1b"})
    for fixture, flag in (("gke-l4", "--chat-template"), ("gke-cpu-only", "--chat-template-file")):
        ctr, pod = container(catalog, spec, fixture)
        assert ctr["args"][ctr["args"].index(flag) + 1] == "/etc/gemma-operator/chat-template/chat_template.jinja"
        assert {"name": "chat-template", "mountPath": "/etc/gemma-operator/chat-template", "readOnly": True} in ctr["volumeMounts"]
        assert {"name": "chat-template", "configMap": {"name": "tpl", "items": [{"key": "chat.jinja", "path": "chat_template.jinja"}]}} in pod["volumes"]


@pytest.mark.parametrize("arg", ["--chat-template=x", "--chat-template-file=/x"])
def test_the_plan_owns_the_template_flags(catalog, arg):
    spec = spec_with(None, model={"family": "gemma3", "size": "1b"}, extraArgs=[arg], accelerator="cpu")
    with pytest.raises(InvalidSpec, match="set by the plan"):
        container(catalog, spec, "gke-cpu-only")


def _plan_cli(tmp_path, docs: list[dict], *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "gd.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    import io

    out, err = io.StringIO(), io.StringIO()
    code = main(["plan", "-f", str(path), "--nodes", str(NODES / "gke-cpu-only.yaml"), *extra], out, err)
    return code, out.getvalue(), err.getvalue()


def _resource(spec: dict) -> dict:
    return {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "metadata": {"name": "chat"}, "spec": spec}


def test_plan_prints_the_sample_prompt_of_a_configmap_in_its_files(tmp_path):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tpl"}, "data": {"chat.jinja": MARKED}}
    code, out, _ = _plan_cli(tmp_path, [_resource({"chatTemplate": {"configMapRef": {"name": "tpl", "key": "chat.jinja"}}}), cm],
                             "-o", "json")  # fmt: skip
    assert code == 0
    got = json.loads(out)["chatTemplate"]
    assert got["source"] == "ConfigMap tpl, key chat.jinja"
    assert got["prompt"] == ("<bos><|system|>You are a concise assistant.<|end|>\n<|user|>What is Gemma?<|end|>\n"
                             "<|assistant|>A family of open models from Google.<|end|>\n<|user|>Which sizes are there?<|end|>\n"
                             "<|model|>")  # fmt: skip
    assert [m["role"] for m in got["messages"]] == ["system", "user", "assistant", "user"]
    # --manifests: the Deployment as the operator applies it, with the digest of the key's content.
    code, out, _ = _plan_cli(tmp_path, [_resource({"chatTemplate": {"configMapRef": {"name": "tpl", "key": "chat.jinja"}}}), cm],
                             "-o", "json", "--manifests")  # fmt: skip
    deployment = next(m for m in json.loads(out)["manifests"] if m["kind"] == "Deployment")
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        chat_template.DIGEST: chat_template.content_digest(MARKED)}


def test_plan_table_shows_the_default_prompt_and_refuses_a_broken_one(tmp_path):
    code, out, _ = _plan_cli(tmp_path, [_resource({"model": {"family": "gemma3", "size": "1b"}})])
    assert code == 0
    assert "Chat template: the checkpoint's template (<start_of_turn> turns" in out
    assert "  | <start_of_turn>model" in out
    code, _, err = _plan_cli(tmp_path, [_resource({"chatTemplate": {"inline": "a\n{{ x }"}})])
    assert code == 2 and "spec.chatTemplate.inline: line 2: unexpected '}'" in err


def test_plan_without_the_configmap_says_it_was_not_checked(tmp_path):
    code, out, _ = _plan_cli(tmp_path, [_resource({"chatTemplate": {"configMapRef": {"name": "tpl", "key": "k"}}})],
                             "-o", "json")  # fmt: skip
    assert code == 0
    got = json.loads(out)["chatTemplate"]
    assert "prompt" not in got and "not in the files given" in got["note"]
