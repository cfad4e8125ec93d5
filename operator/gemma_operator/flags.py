"""How the servers' parsers read a flag in extraArgs. Pure; shared by the spec model and render.

vLLM parses with argparse (FlexibleArgumentParser): `--max_model_len` is `--max-model-len`
(underscores become dashes), an unambiguous prefix is the whole flag (`--served` is
`--served-model-name`, `-t` is `-tp`), and a two-character flag takes its value attached
(`-qfp8` is `-q fp8`). Checked against vLLM 0.32.0's own parser: none of its 430 option strings
is a strict prefix of a flag the operator owns or refuses, except `-h` of llama.cpp's `-hft`
(tests/dataplane/test_vllm_args.py asks that parser). llama.cpp's parser matches whole flags only.
"""

from __future__ import annotations

import itertools


def flag_name(arg: str) -> str:
    """The flag an argument names, as argparse reads it: before any `=`, `_` as `-` for `--` flags."""
    name = arg.split("=", 1)[0]
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name


def argparse_names(arg: str, flag: str) -> bool:
    """Whether argparse (allow_abbrev, vLLM's underscore rule) reads `arg` as `flag`."""
    name = flag_name(arg)
    if name in ("-", "--") or not name.startswith("-"):
        return False
    if name == flag or flag.startswith(name):
        return True  # the flag, or an abbreviation of it
    return len(flag) == 2 and flag[1] != "-" and arg.startswith(flag)  # -qfp8


def exact_names(arg: str, flag: str) -> bool:
    """Whether a whole-flag parser (llama.cpp) reads `arg` as `flag`."""
    return arg.split("=", 1)[0] == flag


def spellings(flag: str) -> list[str]:
    """Every way to write a `--` flag that vLLM reads as it: each `-` between words as `-` or `_`."""
    if not flag.startswith("--"):
        return [flag]
    words = flag[2:].split("-")
    return [
        "--" + "".join(word + sep for word, sep in zip(words, (*seps, "")))
        for seps in itertools.product("-_", repeat=len(words) - 1)
    ]
