"""A Hugging Face Hub on loopback: the real download code of vLLM, `hf download` and llama.cpp runs.

It serves in-memory repos the way the Hub's HTTP API does, for what those clients ask:

- `HEAD|GET /{repo}/resolve/{revision}/{path}`: the file, with `ETag`, `X-Repo-Commit`,
  `Content-Length` and `Accept-Ranges` (and, for large-file-storage files, `X-Linked-Etag` and
  `X-Linked-Size`, the headers huggingface_hub prefers); `Range: bytes=A-B` or `bytes=A-` gives a 206.
- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{revision}`: repo info with `sha`
  and `siblings` (huggingface_hub's `repo_info`, used by `snapshot_download`).
- `GET /api/models/{repo}/tree/{revision}[/{path}]`: the file listing (`list_repo_tree`, and
  llama.cpp's `-hf` downloader, which reads `lfs.oid`).
- `GET /api/models/{repo}/refs`: branches with `targetCommit` (llama.cpp resolves `main` here).
- `POST /api/models/{repo}/paths-info/{revision}`: metadata of named paths.

Errors carry the Hub's `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`),
which huggingface_hub turns into its typed errors (a missing optional file is not a failure).

Every response body is counted: `file_bytes` per (repo, path) for `resolve` GETs (the weights
and configs a client fetched; `ranged_bytes` the part sent as byte ranges), `api_bytes` for the
JSON endpoints. No redirects, no Xet, no auth.
llama.cpp reads `MODEL_ENDPOINT` (then `HF_ENDPOINT`), huggingface_hub reads `HF_ENDPOINT`: both
may be plain http (llama.cpp refuses only https when built without TLS, as the cached build is).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import pathlib
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = "127.0.0.1"
# What the Hub stores in large-file storage (by suffix): weights and other binaries.
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".model")


@dataclass(frozen=True)
class HubFile:
    path: str
    data: bytes

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def git_oid(self) -> str:
        """The git blob id, the Hub's ETag for files kept in git."""
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        """The large-file-storage object id, the Hub's ETag for LFS files."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.git_oid, "size": len(self.data), "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": 134}
        return entry


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, repo_id: str, directory: pathlib.Path) -> HubRepo:
        files = {
            p.relative_to(directory).as_posix(): HubFile(p.relative_to(directory).as_posix(), p.read_bytes())
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
        return cls(repo_id, files)

    @property
    def sha(self) -> str:
        """A commit id that changes with any file: 40 hex digits, as the Hub's."""
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + self.files[path].git_oid.encode())
        return digest.hexdigest()

    def info(self) -> dict[str, Any]:
        return {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0],
            "sha": self.sha,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": path} for path in sorted(self.files)],
        }


class LoopbackHub:
    """The Hub on 127.0.0.1 in a thread. `with LoopbackHub(repos) as hub:`; `hub.endpoint` is the URL."""

    def __init__(self, repos: list[HubRepo] | None = None, token: str | None = None) -> None:
        self.repos: dict[str, HubRepo] = {r.repo_id: r for r in repos or []}
        self.token = token  # set: every request without `Authorization: Bearer <token>` gets the Hub's 401
        self.authorized: list[bool] = []  # per request: whether it carried that header
        self.file_bytes: Counter[tuple[str, str]] = Counter()
        self.ranged_bytes: Counter[tuple[str, str]] = Counter()  # the part of file_bytes sent as 206s
        self.api_bytes = 0
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, repo: HubRepo) -> None:
        self.repos[repo.repo_id] = repo

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "the hub is not started"
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def fetched(self, repo_id: str | None = None) -> int:
        """Bytes of files sent (resolve GET bodies), for one repo or all."""
        with self._lock:
            return sum(n for (repo, _), n in self.file_bytes.items() if repo_id in (None, repo))

    def ranged(self, repo_id: str | None = None) -> int:
        """Bytes sent as byte ranges (206), e.g. a client reading a safetensors header."""
        with self._lock:
            return sum(n for (repo, _), n in self.ranged_bytes.items() if repo_id in (None, repo))

    def files_fetched(self, repo_id: str) -> dict[str, int]:
        with self._lock:
            return {path: n for (repo, path), n in self.file_bytes.items() if repo == repo_id and n}

    def reset_counts(self) -> None:
        with self._lock:
            self.file_bytes.clear()
            self.ranged_bytes.clear()
            self.api_bytes = 0
            self.requests.clear()

    def start(self) -> LoopbackHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: LoopbackHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the Hub; every response has a Content-Length

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")[1:]]
        # /api/models/{org}/{name}/paths-info/{revision}
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "paths-info":
            repo = self._repo("/".join(parts[2:4]), parts[5], head=False)
            if repo is None:
                return
            if "json" in (self.headers.get("Content-Type") or ""):
                paths = json.loads(body or b"{}").get("paths", [])
            else:
                paths = urllib.parse.parse_qs(body.decode()).get("paths", [])
            entries = [repo.files[p].tree_entry() for p in paths if p in repo.files]
            return self._json(200, entries)
        self._error(404, "EntryNotFound", f"no route for POST {url.path}", head=False)

    def _route(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        if self.owner.token is not None:
            authorized = self.headers.get("Authorization") == f"Bearer {self.owner.token}"
            with self.owner._lock:
                self.owner.authorized.append(authorized)
            if not authorized:
                return self._error(401, "GatedRepo", "Access to this repo is restricted: log in.", head)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")[1:]]
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            if not rest:
                return self._info(repo_id, "main", head)
            if rest[0] == "revision" and len(rest) >= 2:
                return self._info(repo_id, "/".join(rest[1:]), head)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]), head)
            if rest == ["refs"]:
                repo = self._repo(repo_id, "main", head)
                if repo is not None:
                    branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.sha}
                    self._json(200, {"branches": [branch], "converts": [], "tags": []}, head)
                return
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        self._error(404, "EntryNotFound", f"no route for {url.path}", head)

    def _repo(self, repo_id: str, revision: str, head: bool) -> HubRepo | None:
        repo = self.owner.repos.get(repo_id)
        if repo is None:
            # The Hub answers 401 for a repo it will not show (missing, private or gated).
            self._error(401, "RepoNotFound", f"Repository not found: {repo_id}", head)
            return None
        if revision not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
            return None
        return repo

    def _info(self, repo_id: str, revision: str, head: bool) -> None:
        repo = self._repo(repo_id, revision, head)
        if repo is not None:
            self._json(200, repo.info(), head)

    def _tree(self, repo_id: str, revision: str, prefix: str, head: bool) -> None:
        repo = self._repo(repo_id, revision, head)
        if repo is None:
            return
        under = prefix.rstrip("/") + "/" if prefix else ""
        entries = [f.tree_entry() for path, f in sorted(repo.files.items()) if path.startswith(under)]
        self._json(200, entries, head)

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self._repo(repo_id, revision, head)
        if repo is None:
            return
        file = repo.files.get(path)
        if file is None:
            self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", head)
            return
        size = len(file.data)
        start, end = _byte_range(self.headers.get("Range", ""), size)
        partial = (start, end) != (0, size - 1)
        body = file.data[start : end + 1]
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{file.etag}"')
        self.send_header("X-Repo-Commit", repo.sha)
        if file.lfs:
            self.send_header("X-Linked-Etag", f'"{file.sha256}"')
            self.send_header("X-Linked-Size", str(len(file.data)))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        # Counted before the body goes out, so a client that has read it sees it counted.
        sent = 0 if head else len(body)
        with self.owner._lock:
            self.owner.file_bytes[(repo_id, path)] += sent
            if partial:
                self.owner.ranged_bytes[(repo_id, path)] += sent
            self.owner.requests.append((self.command, self.path, 206 if partial else 200))
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, head: bool = False) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with self.owner._lock:
            self.owner.api_bytes += 0 if head else len(body)
            self.owner.requests.append((self.command, self.path, status))
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.end_headers()
        with self.owner._lock:
            self.owner.requests.append((self.command, self.path, status))
        if not head:
            self.wfile.write(body)


def _byte_range(header: str, size: int) -> tuple[int, int]:
    """(first, last) byte of a single `Range: bytes=A-B` / `bytes=A-` / `bytes=-N`; the whole file otherwise."""
    whole = (0, max(size - 1, 0))
    if not header.startswith("bytes=") or "," in header:
        return whole
    first, _, last = header[6:].partition("-")
    try:
        if not first:  # the last N bytes
            return max(size - int(last), 0), size - 1
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return whole
    return (start, end) if start <= end else whole
