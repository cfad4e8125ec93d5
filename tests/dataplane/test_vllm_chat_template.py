"""A spec.chatTemplate override served by vLLM (issue 18, part 5): the rendered command line carries
the template text as one --chat-template argument, vLLM takes it as the template (not a path), and
the prompt the engine runs for a chat request is the override's, markers and all.

One vLLM server, started from the rendered command line (address changed only), against the
loopback Hub with the tiny Gemma 3 checkpoint, as conftest's vllm_run does.
"""

from __future__ import annotations


import pytest

from tests.dataplane import hub, servers

pytestmark = pytest.mark.dataplane

FIXTURE = "gke-l4"
MARKED = ("{{ bos_token }}{% for m in messages %}[[{{ m.role }}]]{{ m.content }}[[/turn]]\n{% endfor %}"
          "{% if add_generation_prompt %}[[model]]{% endif %}")  # fmt: skip
SPEC = {"model": {"family": "gemma3", "size": "1b"}, "chatTemplate": {"inline": MARKED}}


@pytest.fixture(scope="module")
def served(vllm_python, tiny_hf, tmp_path_factory):
    _, plan = servers.planned(FIXTURE, SPEC)
    container = servers.rendered_container(FIXTURE, SPEC)
    scratch = tmp_path_factory.mktemp("vllm-template")
    port = servers.free_port()
    with hub.LoopbackHub([hub.HubRepo.from_dir(plan.model_id, tiny_hf)]) as loopback:
        srv = servers.vllm_server(vllm_python, container, port, scratch / "vllm.log",
                                  servers.local_env(container, scratch), loopback.endpoint)  # fmt: skip
        try:
            srv.start(timeout_s=600.0)
            yield srv, plan, container
        finally:
            srv.stop()


def test_the_template_is_one_argument_of_the_rendered_command_line(served):
    _, _, container = served
    args = container["args"]
    assert args[args.index("--chat-template") + 1] == MARKED


def test_the_engines_prompt_is_the_overrides(served):
    srv, plan, _ = served
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    body = {"model": plan.served_model_name, "messages": messages, "max_tokens": 2, "temperature": 0,
            "prompt_logprobs": 0}  # fmt: skip
    status, reply = srv.client.post("/v1/chat/completions", body)
    assert status == 200, reply
    ran = [int(next(iter(e))) for e in reply["prompt_logprobs"][1:]]  # the first prompt token has none
    expected_text = "<bos>[[system]]Be brief.[[/turn]]\n[[user]]Hi[[/turn]]\n[[model]]"
    status, tokens = srv.client.post("/tokenize", {"model": plan.served_model_name, "prompt": expected_text,
                                                   "add_special_tokens": False})  # fmt: skip
    assert status == 200, tokens
    assert ran == tokens["tokens"][1:], (ran, tokens["tokens"])
    status, text = srv.client.post("/detokenize", {"model": plan.served_model_name, "tokens": tokens["tokens"]})
    assert status == 200 and "[[user]]Hi[[/turn]]" in text["prompt"] and "<start_of_turn>" not in text["prompt"], text
