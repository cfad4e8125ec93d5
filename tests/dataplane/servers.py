"""What the data-plane tests and bench/dataplane.py share.

- `rendered_container`: the model-server container gemma-operator renders for a spec on a
  node fixture, through the real inventory -> planner -> render path.
- `llama_server_binary` / `vllm_python`: the cached llama-server build and vLLM venv, made by
  scripts/llama_server.sh and scripts/vllm_venv.sh when the cache is cold (never skipped).
- `local_llama_args`: the rendered llama-server args with only the model source swapped for a
  local GGUF and the address swapped for loopback.
- `LlamaServer`: runs llama-server on loopback, waits (bounded) until healthy, always kills it;
  `name=` reuses it for vLLM.
- `loopback_args`, `hub_env`, `vllm_argv`, `VLLM_CPU_ENV`: the rendered command lines run with the
  model source kept, pointed at the loopback Hub (tests/dataplane/hub.py), the rendered cache
  path mapped to a scratch directory, and (vLLM) only what a CPU requires changed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import yaml

from gemma_operator import catalog as catalog_mod
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import NoFit, Plan, plan
from gemma_operator.render import render
from gemma_operator.runtimes import CACHE_DIR

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODES = ROOT / "tests" / "fixtures" / "nodes"
SCRIPTS = ROOT / "scripts"
LOOPBACK = "127.0.0.1"
# A cold llama-server build takes 8-14 min on 2 cores; a cold vLLM venv a few minutes.
BUILD_TIMEOUT_S = 45 * 60


def node_fixtures() -> list[str]:
    return sorted(p.stem for p in NODES.glob("*.yaml"))


def nodes(fixture: str) -> list[dict[str, Any]]:
    return yaml.safe_load((NODES / f"{fixture}.yaml").read_text())["items"]


def planned(fixture: str, spec: dict[str, Any]) -> tuple[GemmaDeploymentSpec, Plan | NoFit]:
    cat = catalog_mod.load()
    parsed = GemmaDeploymentSpec.model_validate(spec)
    return parsed, plan(parsed, pools(nodes(fixture), cat, parsed.node_selector), cat)


def rendered_objects(fixture: str, spec: dict[str, Any], name: str = "chat") -> list[dict[str, Any]]:
    """Every object rendered for `spec` on the node fixture (the cache's Jobs first, when any)."""
    parsed, result = planned(fixture, spec)
    assert not isinstance(result, NoFit), f"{fixture} {spec}: no fit: {result.message}"
    return render(result, name, "default", parsed)


def rendered_pod(fixture: str, spec: dict[str, Any], name: str = "chat") -> dict[str, Any]:
    """The pod spec of the Deployment rendered for `spec` on the node fixture."""
    (deployment,) = [o for o in rendered_objects(fixture, spec, name) if o["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def rendered_container(fixture: str, spec: dict[str, Any], name: str = "chat") -> dict[str, Any]:
    """The server container of the Deployment rendered for `spec` on the node fixture."""
    (container,) = rendered_pod(fixture, spec, name)["containers"]
    return container


def _cached(script: str, env: dict[str, str] | None = None) -> str:
    """Run a cache script (build on a cold cache) and return the path it prints last."""
    proc = subprocess.run(
        ["bash", str(SCRIPTS / script)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc.stdout.strip().splitlines()[-1]


def llama_server_binary() -> pathlib.Path:
    return pathlib.Path(_cached("llama_server.sh"))


def vllm_python() -> pathlib.Path:
    return pathlib.Path(_cached("vllm_venv.sh"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def local_llama_args(args: list[str], model: pathlib.Path, port: int) -> list[str]:
    """The rendered args with the model source replaced by `-m MODEL` and the address by loopback.

    Everything else is kept exactly, in order. Fails if the rendered args lack what is swapped.
    """
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in ("--hf-repo", "--hf-file", "--host", "--port"):
            assert i + 1 < len(args), f"{flag} has no value in {args}"
            seen.add(flag)
            if flag == "--hf-repo":
                out += ["-m", str(model)]
            elif flag == "--host":
                out += ["--host", LOOPBACK]
            elif flag == "--port":
                out += ["--port", str(port)]
            i += 2
            continue
        out.append(flag)
        i += 1
    assert {"--hf-repo", "--host", "--port"} <= seen, f"rendered args lack a model source or address: {args}"
    return out


def local_env(container: dict[str, Any], scratch: pathlib.Path) -> dict[str, str]:
    """The container's literal env vars, with each mounted volume's path moved to `scratch/<volume>`.

    The directories are made as the kubelet makes an emptyDir: mode 0777, so a non-root server
    can write there.
    """
    mounts = {}
    for mount in container.get("volumeMounts", []):
        local = scratch / mount["name"]
        local.mkdir(exist_ok=True)
        local.chmod(0o777)
        mounts[mount["mountPath"]] = str(local)
    assert CACHE_DIR in mounts, f"the weights cache {CACHE_DIR} is not a volume: {container.get('volumeMounts')}"
    result = {}
    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
            for path in sorted(mounts, key=len, reverse=True):
                if value == path or value.startswith(path + "/"):
                    value = mounts[path] + value[len(path):]
                    break
            result[var["name"]] = value
    return result


def loopback_args(args: list[str], port: int) -> list[str]:
    """The rendered args with only the address changed: `--host` to loopback, `--port` to `port`."""
    out = list(args)
    for flag, value in (("--host", LOOPBACK), ("--port", str(port))):
        assert flag in out and out.index(flag) + 1 < len(out), f"rendered args lack {flag}: {args}"
        out[out.index(flag) + 1] = value
    return out


def cache_path(container: dict[str, Any], scratch: pathlib.Path) -> pathlib.Path:
    """Where the rendered weights cache (the volume at CACHE_DIR) lives locally: local_env's mapping."""
    (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == CACHE_DIR]
    return scratch / mount["name"]


# Loopback only: the Hub's address for the runtimes' own downloaders, and a dead proxy for
# anything else a Python client might try to reach (huggingface_hub/httpx honour the proxy
# variables; NO_PROXY lets the loopback Hub through). llama.cpp reads MODEL_ENDPOINT first and
# only talks to what it is given.
def hub_env(endpoint: str) -> dict[str, str]:
    dead = f"http://{LOOPBACK}:9"
    return {
        "HF_ENDPOINT": endpoint,
        "MODEL_ENDPOINT": endpoint,
        "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
        "NO_PROXY": f"{LOOPBACK},localhost", "no_proxy": f"{LOOPBACK},localhost",
    }  # fmt: skip


# What the vLLM CPU build needs that a GPU pod does not: on the CPU backend
# --gpu-memory-utilization is the share of host RAM to reserve (0.90 of this shared machine, and
# refused when that much is not free); VLLM_CPU_KVCACHE_SPACE (GiB) sizes the KV cache instead
# and skips that reservation. The rendered flags themselves stay as they are.
VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
VLLM_SERVE = pathlib.Path(__file__).resolve().parent / "vllm_serve.py"
# Variables of the test's own environment that would change where or whether vLLM downloads.
_HUB_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN",
             "XDG_CACHE_HOME", "HF_ENDPOINT", "MODEL_ENDPOINT", "HF_HOME", "LLAMA_CACHE")  # fmt: skip


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """os.environ without the Hub/cache variables of the caller, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if k not in _HUB_VARS}, **env}


def vllm_argv(python: pathlib.Path, container: dict[str, Any], port: int) -> list[str]:
    """`vllm serve` + the rendered args, run by the vLLM venv's python (vllm_serve.py says why)."""
    assert container["command"] == ["vllm", "serve"], container["command"]
    return [str(python), str(VLLM_SERVE), *container["command"][1:], *loopback_args(container["args"], port)]


class Client:
    """A tiny HTTP client for one loopback server; every call has a timeout."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port = port
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout)
        try:
            payload = None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def stream(self, path: str, body: Any, max_events: int = 1000) -> list[Any]:
        """POST and read server-sent events until [DONE] (bounded by count and the timeout)."""
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout)
        events: list[Any] = []
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200, (resp.status, resp.read()[:2000])
            for _ in range(max_events * 4):
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[len(b"data:"):].strip()
                if data == b"[DONE]":
                    events.append("[DONE]")
                    break
                events.append(json.loads(data))
                if len(events) >= max_events:
                    break
            return events
        finally:
            conn.close()


@contextlib.contextmanager
def streaming(port: int, body: Any, path: str = "/v1/chat/completions") -> Iterator[None]:
    """A streamed request on loopback, held open for the block once its first event has come (the
    server is working on it), then closed (the server drops it)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read()[:2000])
        for _ in range(100):
            if resp.readline().startswith(b"data:"):
                break
        yield
    finally:
        conn.close()


def vllm_server(python: pathlib.Path, container: dict[str, Any], port: int, log: pathlib.Path,
                local: dict[str, str], hub_endpoint: str, extra: dict[str, str] | None = None) -> LlamaServer:
    """vLLM on loopback, not started: the container's command line (`vllm_argv`) with the rendered env
    mapped locally (`local`), VLLM_CPU_ENV, the loopback hub's variables and `extra`, over a clean
    environment (`clean_env`); the server's `env` is that environment."""
    env = clean_env({**local, **VLLM_CPU_ENV, **hub_env(hub_endpoint), **(extra or {})})
    argv = vllm_argv(python, container, port)
    return LlamaServer(pathlib.Path(argv[0]), argv[1:], port, log, env, name="vllm", inherit_env=False, poll_s=0.5)


class ServerExited(RuntimeError):
    pass


class LlamaServer:
    """llama-server on loopback. `start()` waits until /health is 200; `stop()` always kills it."""

    def __init__(self, binary: pathlib.Path, args: list[str], port: int, log: pathlib.Path,
                 env: dict[str, str] | None = None, user: tuple[int, int] | None = None,
                 name: str = "llama-server", inherit_env: bool = True, poll_s: float = 0.05) -> None:  # fmt: skip
        self.name = name
        self.poll_s = poll_s
        self.argv = [str(binary), *args]
        self.user = user  # (uid, gid) to run as, as a pod's runAsUser / runAsGroup
        self.port = port
        self.log_path = log
        self.env = {**os.environ, **(env or {})} if inherit_env else dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.client = Client(port)

    def start(self, timeout_s: float = 120.0) -> float:
        """Start and wait until healthy; returns the seconds it took."""
        t0 = time.monotonic()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True,
            **({"user": self.user[0], "group": self.user[1], "extra_groups": []} if self.user else {}),
        )  # fmt: skip
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerExited(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = Client(self.port, timeout=2.0).get("/health")
                if status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(self.poll_s)
        raise TimeoutError(f"{self.name} not healthy after {timeout_s}s:\n{self.log()}")

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            # The whole session: vLLM's engine and worker processes outlive a killed parent.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> LlamaServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(binary: pathlib.Path, args: list[str], port: int, log: pathlib.Path,
            env: dict[str, str] | None = None) -> Iterator[LlamaServer]:  # fmt: skip
    with LlamaServer(binary, args, port, log, env) as server:
        yield server
