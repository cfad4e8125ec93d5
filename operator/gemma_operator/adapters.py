"""spec.adapters -> what serving LoRA fine-tunes on the base takes: the ranks and slots vLLM plans,
the memory they add, where each adapter lands in the cache, the server flags, and the download. Pure.

vLLM 0.32 serves LoRA adapters beside the base (`--enable-lora`, `--lora-modules name=path`), each
under its own served model name; it preallocates `--max-loras` GPU slots of `--max-lora-rank`, so the
plan needs the largest rank before the server starts. The rank is the spec's `rank` when given;
otherwise vLLM's own default (16) is planned, and the download (which reads each adapter's
adapter_config.json) refuses an adapter of a larger rank or of another base, naming it and the field
to set: the memory estimate and the flags stay the ones the plan made, never a guess raised behind
its back. llama.cpp loads each adapter's GGUF (`--lora FILE`).

Where they land follows the weights (cache.py): with the emptyDir cache each pod's init containers
download them into its /models/adapters/NAME; with a claim or bucket, one Job per adapter fills the
shared store once, into adapters/KEY (KEY: what the adapter is, its repo and revision or its bucket
and path), which the pods mount read-only.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from .api.v1alpha1 import Adapter
from .catalog import ModelSize

GIB = 2**30
# vLLM 0.32's --max-lora-rank choices (vllm/config/lora.py `MaxLoRARanks`, checked with its own
# parser in tests/dataplane/test_vllm_args.py), and its default.
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_RANK = 16
# LoRA weights and vLLM's slots are kept in the model's 16-bit dtype; a PEFT adapter saved in bf16 or
# converted to an f16 GGUF (llama.cpp's convert_lora_to_gguf.py default) holds 2 bytes per weight.
LORA_BYTES = 2
ADAPTER_DIR = "/models/adapters"  # runtimes.CACHE_DIR/adapters: in the pod's writable /models volume (the emptyDir cache)
STORE_DIR = "adapters"  # in a shared store (claim or bucket), beside the hub cache's models--org--name folders
# The download's exit codes for its two refusals (a Job's podFailurePolicy fails at once on them:
# retrying cannot change an adapter_config.json), in the order of the policy's rules.
EXIT_RANK, EXIT_BASE = 3, 4
REFUSALS = (EXIT_RANK, EXIT_BASE)


def store_key(adapter: Adapter, runtime: str) -> str:
    """The adapter's folder in a shared store, named for what it is, not what a resource calls it:
    two resources may give one name to different repos, or two names to one. llama.cpp's key holds
    the GGUF file too (two files of one basename in one repo stay apart)."""
    if adapter.repo:
        parts = ("hf", adapter.repo.lower(), adapter.revision or "main", adapter.gguf if runtime == "llamacpp" else "")
        readable = adapter.repo.split("/")[-1]
    else:
        parts = ("gcs", adapter.bucket or "", (adapter.path or "").strip("/"), "")
        readable = (adapter.path or "").strip("/").split("/")[-1]
    digest = hashlib.sha256("|".join(p or "" for p in parts).encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "-", readable.lower()).strip("-")[:40].strip("-")
    return f"{slug}-{digest}" if slug else digest


def path(adapter: Adapter, store: str | None = None, runtime: str = "vllm") -> str:
    """Where the adapter is downloaded: in the pod's /models/adapters, a folder named for it (names
    are unique and path-safe); in a shared store mounted at `store`, its store_key folder."""
    if store is None:
        return f"{ADAPTER_DIR}/{adapter.name}"
    return f"{store}/{STORE_DIR}/{store_key(adapter, runtime)}"


def gguf_path(adapter: Adapter, store: str | None = None) -> str:
    return f"{path(adapter, store, 'llamacpp')}/{(adapter.gguf or '').rsplit('/', 1)[-1]}"


def rank_bound(adapter: Adapter) -> int:
    """The rank one adapter is planned for (its own, or vLLM's default, rounded up to vLLM's choices):
    what its download checks in a shared store, whatever list it is in, so that adding an adapter
    never changes the fill of the others. At most planned_rank of any list holding it."""
    return next(r for r in VLLM_RANKS if r >= (adapter.rank or DEFAULT_RANK))


def planned_rank(adapters: Sequence[Adapter]) -> int:
    """vLLM's --max-lora-rank: the largest rank, rounded up to one of vLLM's choices."""
    largest = max((a.rank or DEFAULT_RANK for a in adapters), default=DEFAULT_RANK)
    return next(r for r in VLLM_RANKS if r >= largest)


def params_per_rank(size: ModelSize) -> float:
    """LoRA parameters per unit of rank over every linear layer of the decoder (q, k, v, o, gate, up,
    down: PEFT's `all-linear`, what Google's Gemma LoRA guides target): a d_in x d_out module adds
    r x (d_in + d_out). The MLP width is not in the catalog: it is what the parameter count leaves
    per layer after attention and the embeddings, so multimodal encoders make it an upper bound."""
    arch = size.architecture
    d, q, kv = arch.hidden_size, arch.attention_heads * arch.head_dim, arch.kv_heads * arch.head_dim
    attention_params = 2 * d * q + 2 * d * kv
    per_layer = (size.params_b * 1e9 - arch.vocab_size * d) / arch.layers
    mlp_width = max(0.0, per_layer - attention_params) / (3 * d)
    attention_sides = (d + q) + 2 * (d + kv) + (q + d)
    return arch.layers * (attention_sides + 3 * (d + mlp_width))


def memory_gib(size: ModelSize, runtime: str, adapters: Sequence[Adapter]) -> float:
    """Device (vLLM) or node (llama.cpp) memory the adapters take.

    vLLM: its GPU slots, max_loras x max_lora_rank x params per rank x 2 bytes (vLLM's LoRA layers
    allocate `lora_a_stacked`/`lora_b_stacked` of that shape per module; the adapters themselves wait
    in host memory, `--max-cpu-loras`). llama.cpp: every adapter loaded, sum of rank x params per rank
    x 2 bytes.
    """
    if not adapters:
        return 0.0
    per_rank = params_per_rank(size) * LORA_BYTES
    if runtime == "vllm":
        return len(adapters) * planned_rank(adapters) * per_rank / GIB
    return sum((a.rank or DEFAULT_RANK) for a in adapters) * per_rank / GIB


def llamacpp_refusal(adapters: Sequence[Adapter]) -> str | None:
    """Why llama.cpp can't serve these adapters, or None."""
    for i, adapter in enumerate(adapters):
        if not adapter.gguf:
            return (f"llama.cpp loads LoRA adapters as GGUF: adapter {adapter.name} has none "
                    f"(set spec.adapters[{i}].gguf to its GGUF file, from llama.cpp's convert_lora_to_gguf.py)")  # fmt: skip
        if adapter.bucket:
            return (f"llama.cpp's image downloads adapters from the Hugging Face Hub only: adapter {adapter.name} is "
                    f"in a bucket (spec.adapters[{i}].bucket)")  # fmt: skip
    return None


def base_mismatch(adapters: Sequence[Adapter], base_ids: Sequence[str]) -> tuple[int, Adapter] | None:
    """The first adapter whose declared base is not the served model."""
    bases = {b.lower() for b in base_ids}
    for i, adapter in enumerate(adapters):
        if adapter.base_model and adapter.base_model.lower() not in bases:
            return i, adapter
    return None


def name_clash(adapters: Sequence[Adapter], served_model_name: str) -> tuple[int, Adapter] | None:
    for i, adapter in enumerate(adapters):
        if adapter.name == served_model_name:
            return i, adapter
    return None


def vllm_args(adapters: Sequence[Adapter], store: str | None = None) -> list[str]:
    if not adapters:
        return []
    modules = [f"{a.name}={path(a, store)}" for a in adapters]
    return ["--enable-lora", "--lora-modules", *modules, "--max-loras", str(len(adapters)),
            "--max-lora-rank", str(planned_rank(adapters))]  # fmt: skip


def llamacpp_args(adapters: Sequence[Adapter], store: str | None = None) -> list[str]:
    """llama-server (b11434) serves one model name, and applies each loaded adapter at its scale to every
    request that names none. Loaded at scale 0 (`--lora-scaled FILE:0,...`; with --lora and
    --lora-init-without-apply its /lora-adapters still reports scale 1, tests/dataplane/test_llama_lora.py),
    the base stays the base, and a request picks an adapter with `"lora": [{"id": N, "scale": 1}]`
    (N: its place in spec.adapters). Names and files hold no ':' or ',' (the schema's patterns)."""
    if not adapters:
        return []
    return ["--lora-scaled", ",".join(f"{gguf_path(a, store)}:0" for a in adapters)]


# The download, in the runtime image's Python (vLLM's image ships huggingface_hub): argv carries the
# adapters, so no user string is spliced into code. It reads each adapter_config.json and refuses a
# rank above the one planned or another base, naming the adapter and the field to set, with its own
# exit code (EXIT_RANK, EXIT_BASE). A row: index in spec.adapters ("" in a shared Job, which several
# resources' lists may hold at other places), name, kind, source, revision or path, folder, max rank.
VLLM_DOWNLOAD = r"""
import json, os, sys, urllib.parse, urllib.request
bases, rows = sys.argv[1].lower().split(","), sys.argv[2:]
def gcs(bucket, prefix, dest):
    req = urllib.request.Request("http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
                                 headers={"Metadata-Flavor": "Google"})
    token = json.load(urllib.request.urlopen(req))["access_token"]
    auth = {"Authorization": "Bearer " + token}
    api = "https://storage.googleapis.com/storage/v1/b/" + urllib.parse.quote(bucket, safe="")
    listing = json.load(urllib.request.urlopen(urllib.request.Request(
        api + "/o?prefix=" + urllib.parse.quote(prefix.rstrip("/") + "/"), headers=auth)))
    for item in listing.get("items", []):
        rel = item["name"][len(prefix.rstrip("/")) + 1:]
        if not rel or rel.endswith("/") or ".." in rel.split("/"):
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        url = api + "/o/" + urllib.parse.quote(item["name"], safe="") + "?alt=media"
        with urllib.request.urlopen(urllib.request.Request(url, headers=auth)) as src, open(target, "wb") as out:
            out.write(src.read())
def refuse(code, text):
    print(text, file=sys.stderr, flush=True)
    sys.exit(code)
for i in range(0, len(rows), 7):
    index, name, kind, source, extra, dest, max_rank = rows[i:i + 7]
    entry = f"spec.adapters[{index}]" if index else f"the spec.adapters entry for {source}"
    field = f"spec.adapters[{index}].rank: " if index else "rank: "
    where = "" if index else f" on the spec.adapters entry for {source}"
    if kind == "repo":
        from huggingface_hub import snapshot_download
        snapshot_download(source, revision=extra or None, local_dir=dest)
    else:
        gcs(source, extra, dest)
    config = json.load(open(os.path.join(dest, "adapter_config.json")))
    rank, base = int(config.get("r", 0)), str(config.get("base_model_name_or_path") or "")
    if rank > int(max_rank):
        refuse(EXIT_RANK, f"adapter {name}: rank {rank} is above the planned --max-lora-rank {max_rank}: "
                          f"set {field}{rank}{where}")
    if base and base.lower() not in bases and os.path.basename(base.rstrip("/")).lower() not in [b.split("/")[-1] for b in bases]:
        refuse(EXIT_BASE, f"adapter {name}: base_model_name_or_path {base} is not the served model ({', '.join(bases)}): "
                          f"{entry} is for another base")
    print(f"adapter {name}: rank {rank}, base {base or '(unset)'}, in {dest}", flush=True)
""".replace("EXIT_RANK", str(EXIT_RANK)).replace("EXIT_BASE", str(EXIT_BASE))


def _row(index: int | None, adapter: Adapter, folder: str, max_rank: int) -> list[str]:
    source = ["repo", adapter.repo or "", adapter.revision or ""] if adapter.repo else \
        ["bucket", adapter.bucket or "", adapter.path or ""]  # fmt: skip
    shown = adapter.name if index is not None else (adapter.repo or f"gs://{adapter.bucket}/{adapter.path}")
    return ["" if index is None else str(index), shown, *source, folder, str(max_rank)]


def vllm_download_command(adapters: Sequence[Adapter], base_ids: Sequence[str]) -> list[str]:
    """A pod's init container (the emptyDir cache): every adapter into /models/adapters/NAME, checked
    against the plan's --max-lora-rank."""
    rank = planned_rank(adapters)
    rows = [part for i, a in enumerate(adapters) for part in _row(i, a, path(a), rank)]
    return ["python3", "-c", VLLM_DOWNLOAD, ",".join(base_ids), *rows]


def vllm_store_command(adapter: Adapter, base_ids: Sequence[str], store: str) -> list[str]:
    """A shared store's adapter Job: one adapter into its store_key folder, checked against its own
    rank_bound (the Job serves every resource whose list holds it)."""
    return ["python3", "-c", VLLM_DOWNLOAD, ",".join(base_ids), *_row(None, adapter, path(adapter, store), rank_bound(adapter))]


# llama.cpp's images carry curl (their health check) on Ubuntu 24.04; the token goes to curl as a
# header read from stdin (`-H @-`, curl >= 7.55), written by the shell's printf builtin: never in any
# argv. The URL and the file come as the script's arguments, never spliced into it. HF_ENDPOINT as
# huggingface_hub reads it (the Hub by default). curl (>= 7.58) drops the header on a redirect to
# another host, as the Hub's to its CDN.
CURL_DOWNLOAD = """set -eu
url="${HF_ENDPOINT:-https://huggingface.co}/$1"
if [ -n "${HF_TOKEN:-}" ]; then
  printf 'Authorization: Bearer %s\\n' "$HF_TOKEN" | curl --fail --location --silent --show-error --create-dirs -H @- --output "$2" "$url"
else
  curl --fail --location --silent --show-error --create-dirs --output "$2" "$url"
fi
echo "adapter $3: $1 in $2"
"""


def llamacpp_download_command(adapter: Adapter, store: str | None = None) -> list[str]:
    """One adapter's GGUF from the Hub's resolve URL into gguf_path: a pod's init container (no
    store) or a shared store's adapter Job."""
    where = f"{adapter.repo}/resolve/{adapter.revision or 'main'}/{adapter.gguf}"
    return ["sh", "-c", CURL_DOWNLOAD, "sh", where, gguf_path(adapter, store), adapter.name if store is None else adapter.repo or ""]


def llamacpp_download_commands(adapters: Sequence[Adapter]) -> list[list[str]]:
    """One curl per adapter, each an init container of the pod (the emptyDir cache)."""
    return [llamacpp_download_command(a) for a in adapters]


def download_bytes(size: ModelSize, adapters: Sequence[Adapter]) -> int:
    """What the adapters add to the cache: their weights at their rank (2 bytes each), and a MiB of
    config and tokenizer files each."""
    per_rank = params_per_rank(size) * LORA_BYTES
    return int(sum(math.ceil((a.rank or DEFAULT_RANK) * per_rank) + 2**20 for a in adapters))


def reason(adapters: Sequence[Adapter], runtime: str, gib: float) -> str:
    """The sentence status.selection.reasons carries for the adapters."""
    names = ", ".join(a.name for a in adapters)
    guessed = [a.name for a in adapters if a.rank is None]
    if runtime == "vllm":
        rank = planned_rank(adapters)
        text = (f"Adapters {names}: served by vLLM beside the base, each under its own model name (--enable-lora, "
                f"--max-loras {len(adapters)}, --max-lora-rank {rank}); their GPU slots take {gib:.2f} GiB "
                f"(max-loras x max-lora-rank x the LoRA weights per rank on every linear layer, 16-bit).")
        if guessed:
            text += (f" Rank of {', '.join(guessed)} unknown: vLLM's default {DEFAULT_RANK} is planned, and the "
                     "download refuses a larger one (set spec.adapters[].rank).")
        return text
    ids = ", ".join(f"{a.name} {i}" for i, a in enumerate(adapters))
    return (f"Adapters {names}: llama.cpp loads their GGUFs at scale 0 (--lora-scaled FILE:0) and serves "
            f"one model name, so a request picks one with \"lora\": [{{\"id\": N, \"scale\": 1}}] ({ids}); "
            f"they take {gib:.2f} GiB (rank x the LoRA weights per rank on every linear layer, 16-bit).")
