"""Reconcile benchmark: gemma-operator against a bare-kopf floor, on the same API server.

For each operator in turn (bench/baseline_operator.py, then `gemma-operator run`), in its own
subprocess, against a fresh API server with the CRD and a node set:

* create N GemmaDeployments at once from several client threads;
* from a watch: CR seen -> its Deployment seen (p50/p95/p99), and first create -> all N exist;
* wait until the API is quiet, idle (--idle s) and count objects whose resourceVersion changed;
* restart the operator, wait (--restart-wait s) and count again;
* the operator's peak RSS (VmHWM), and API requests per resource by verb, server side.

The API server is kmock's emulator with this project's subclass (tests/integration/kubeapi),
run in its own process so that its CPU is not the benchmark's or the operator's GIL; a real
etcd + kube-apiserver (envtest fixture) when KUBEBUILDER_ASSETS or TEST_ASSET_* are set.
On a real server requests are not counted (the table says n/a): nothing here reads audit logs.

Everything shares the machine: on 2 cores the emulator, the operator and the watch compete,
so absolute figures are the machine's; the ratios are the point. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # the integration fixtures, reused as they are
sys.path.insert(0, str(ROOT / "operator"))

import yaml  # noqa: E402

BENCH_UA = "gemma-bench"
NS = "bench"
GD_PATH = f"/apis/gemma.dev/v1alpha1/namespaces/{NS}/gemmadeployments"
WATCHED = {  # what the watch follows: kind -> list path
    "GemmaDeployment": GD_PATH,
    "Deployment": f"/apis/apps/v1/namespaces/{NS}/deployments",
    "Service": f"/api/v1/namespaces/{NS}/services",
    "Event": f"/api/v1/namespaces/{NS}/events",
}


# ----------------------------------------------------------------------------- API servers
# The watch stream being served in this task: its resource and how far it has read the event log.
_WATCH: contextvars.ContextVar[list] = contextvars.ContextVar("bench_watch")


class EventLog(collections.deque):
    """The emulator's event log, read by each watch stream from where it last read.

    The fixture's watch stream rescans the whole log (up to 10,000 events) on every write, once
    per open watch: a write costs O(log x watches), which a real server does not pay (its watch
    cache hands each watcher only the new events). Iterated inside a watch stream (see
    serve_emulator), this yields only that resource's events appended since the stream's previous
    read; the stream still filters them exactly as before (a superset would be as correct).
    """

    def __iter__(self):  # type: ignore[no-untyped-def]
        watch = _WATCH.get(None)
        if watch is None:
            return super().__iter__()
        resource, cursor = watch
        if cursor is None:
            events = [e for e in super().__iter__() if e.resource == resource]
        else:
            events = []
            for e in reversed(self):
                if e.rv <= cursor:
                    break
                if e.resource == resource:
                    events.append(e)
            events.reverse()
        watch[1] = self[-1].rv if self else cursor  # read up to here: all of it, synchronously
        return iter(events)


def serve_emulator(event_log: int | None = None, fixture_watch: bool = False) -> None:
    """`--serve-emulator`: the emulator in this process; URL on stdout, then commands on stdin."""
    import ipaddress

    import attrs
    from kubeapi import cluster
    from kubeapi import emulator as emu

    fixture_body = emu.GemmaEmulator._body

    @attrs.define(kw_only=True)
    class BenchEmulator(emu.GemmaEmulator):
        """Counts requests per client: the benchmark's own (by User-Agent) apart from the operator's."""

        # The fixture's /24 holds 245 Services: "no cluster IPs left" after that. A /16, handed out
        # in order (the fixture's scan of every host per allocation is O(range)).
        service_cidr: str = "10.96.0.0/16"
        _by_who: dict = attrs.field(factory=dict, init=False)
        _next_ip: int = attrs.field(default=10, init=False)
        _uids: dict = attrs.field(factory=dict, init=False)  # uid -> key of the object committed with it
        _cpu: dict = attrs.field(factory=lambda: collections.defaultdict(collections.Counter), init=False)

        def _allocate_ip(self) -> str:
            net = ipaddress.ip_network(self.service_cidr)
            while self._next_ip < net.num_addresses - 1:
                ip, self._next_ip = str(net.network_address + self._next_ip), self._next_ip + 1
                if ip not in self._ips:
                    self._ips.add(ip)
                    return ip
            return super()._allocate_ip()

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            if not fixture_watch:
                self._events = EventLog(self._events, maxlen=self._events.maxlen)

        def _commit(self, kind, old, new, dry_run, type_=None):  # type: ignore[no-untyped-def]
            result = super()._commit(kind, old, new, dry_run, type_)
            meta = result.get("metadata") or {}
            if not dry_run and meta.get("uid"):
                self._uids[meta["uid"]] = (kind.ref, meta.get("namespace") if kind.namespaced else None,
                                           meta.get("name"))
            return result

        def _uid_exists(self, uid):  # type: ignore[no-untyped-def]
            # The fixture scans every stored object for the owner's uid on each create of an owned
            # object (O(store): ~10% of its CPU at N=500); a real server's garbage collector keeps a
            # graph. Looked up by uid first; the fixture's scan when that does not confirm it.
            key = self._uids.get(uid)
            obj = self._objects[key] if key is not None and key in self._objects else None
            if obj is not None and not obj.deleted and obj.raw["metadata"].get("uid") == uid:
                return True
            return super()._uid_exists(uid)

        async def _serve_watch_stream(self, request, kind, fault=None):  # type: ignore[no-untyped-def]
            # This stream's task only (aiohttp serves a kept-alive connection's requests in one task).
            token = _WATCH.set([(kind.group, kind.version, kind.plural), None])
            try:
                return await super()._serve_watch_stream(request, kind, fault)
            finally:
                _WATCH.reset(token)

        async def _handle(self, request):  # type: ignore[no-untyped-def]
            agent = request._raw_request.headers.get("User-Agent", "")
            # The parent counts into self._counts before its first await: swap it per request.
            who = "bench" if agent.startswith(BENCH_UA) else "operator"
            counts = self._counts = self._by_who.setdefault(who, collections.Counter())
            if self._verb(request) == "watch":  # streams for as long as it is open: not timed here
                return await super()._handle(request)
            # The CPU of one request, by the (verb, resource) it is counted under. Writes run without
            # yielding to other requests (the store's lock is not contended), so this is theirs alone.
            before, cpu = dict(counts), time.thread_time()
            try:
                return await super()._handle(request)
            finally:
                spent = time.thread_time() - cpu
                for key, n in counts.items():
                    if n != before.get(key, 0):
                        self._cpu[who][key] += spent

        @staticmethod
        def _body(request):  # type: ignore[no-untyped-def]
            # The fixture parses apply-patch+yaml bodies with pure-Python PyYAML: ~30% of its CPU on
            # this load, charged to server-side apply alone (a real server parses in Go). JSON is
            # YAML, so a JSON body is parsed as JSON first; the fixture's own parser otherwise.
            if "yaml" in emu._header(request, "content-type"):
                try:
                    return json.loads(request.text)
                except ValueError:
                    pass
            return fixture_body(request)

        def snapshot(self) -> dict:
            with self._sync:
                return {"requests": {who: [[*k, n] for k, n in c.items()] for who, c in self._by_who.items()},
                        "cpu": {who: [[*k, n] for k, n in c.items()] for who, c in self._cpu.items()},
                        "writes": [[*k, n] for k, n in self._writes.items()]}

    emu.GemmaEmulator = BenchEmulator  # EmulatorThread imports it at start
    # The fixture converts the CRD's whole OpenAPI schema to JSON Schema on every validation (~0.35 ms
    # of the 0.7 ms a GemmaDeployment's validation takes, on each of its writes); a real server
    # compiles it once per CRD. Converted once per schema node here (the node kept, so its id
    # stays its own); the top level is copied, as validate() replaces its properties.
    from kubeapi import schema as schema_mod

    convert, converted = schema_mod._to_jsonschema, {}

    def to_jsonschema_once(node):  # type: ignore[no-untyped-def]
        if not isinstance(node, (dict, list)):
            return node
        hit = converted.get(id(node))
        if hit is None or hit[0] is not node:
            hit = converted[id(node)] = (node, convert(node))
        return dict(hit[1]) if isinstance(hit[1], dict) else hit[1]

    schema_mod._to_jsonschema = to_jsonschema_once
    if event_log:
        emu.EVENT_LOG_SIZE = event_log
    thread = cluster.EmulatorThread().start()
    print(json.dumps({"url": thread.url}), flush=True)
    for line in sys.stdin:
        if line.strip() == "counts":
            print(json.dumps(thread.emulator.snapshot()), flush=True)
        elif line.strip() == "stop":
            break
    thread.stop()


@dataclasses.dataclass
class Counts:
    requests: dict[str, collections.Counter]  # who -> (verb, resource) -> n
    writes: collections.Counter  # (verb, resource) -> effective writes, every client
    cpu: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)  # who -> (verb, resource) -> s

    def minus(self, other: Counts) -> Counts:
        who = set(self.requests) | set(other.requests)
        none = collections.Counter()
        return Counts({w: self.requests.get(w, none) - other.requests.get(w, none) for w in who},
                      self.writes - other.writes,
                      {w: self.cpu.get(w, none) - other.cpu.get(w, none) for w in set(self.cpu) | set(other.cpu)})

    def operator(self) -> collections.Counter:
        return self.requests.get("operator", collections.Counter())


class Server:
    """An API server for one operator's run: the emulator's process, or envtest."""

    event_log: int | None = None  # --event-log
    fixture_watch = False  # --fixture-watch

    def __init__(self, workdir: pathlib.Path):
        from kubeapi.cluster import KubeAPI, write_kubeconfig
        from kubeapi.envtest import EnvTest, find_assets

        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.envtest = None
        assets, _ = find_assets()
        if assets is not None:
            self.envtest = EnvTest(assets, workdir)
            self.envtest.service_cluster_ip_range = "10.0.0.0/16"  # the fixture's /24 is full after 245 Services
            self.api = self.envtest.start()
        else:
            argv = [sys.executable, __file__, "--serve-emulator", "fixture-watch" if self.fixture_watch else "",
                    str(self.event_log or "")]
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=(workdir / "emulator.log").open("w"), text=True)
            url = json.loads(self.proc.stdout.readline())["url"]
            self.api = KubeAPI(kind="emulator", server=url, kubeconfig=write_kubeconfig(workdir / "kubeconfig", url))
        self.api.client.user_agent = BENCH_UA

    def cpu_s(self) -> float:
        """The API server's CPU so far: the emulator's process; envtest's etcd + kube-apiserver (the
        controller-manager left out: it does work neither operator asks for, ReplicaSets and Pods)."""
        if self.envtest is not None:
            return sum(cpu_seconds(proc.pid) for name, proc, _ in self.envtest.processes
                       if name in ("etcd", "kube-apiserver"))  # fmt: skip
        return cpu_seconds(self.proc.pid if self.proc is not None else None)

    @property
    def kind(self) -> str:
        return self.api.kind

    def counts(self) -> Counts | None:
        if self.proc is None:
            return None
        self.proc.stdin.write("counts\n")
        self.proc.stdin.flush()
        data = json.loads(self.proc.stdout.readline())
        requests = {who: collections.Counter({(v, r): n for v, r, n in rows}) for who, rows in data["requests"].items()}
        cpu = {who: collections.Counter({(v, r): n for v, r, n in rows}) for who, rows in data["cpu"].items()}
        return Counts(requests, collections.Counter({(v, r): n for v, r, n in data["writes"]}), cpu)

    def stop(self) -> None:
        self.api.close()
        if self.envtest is not None:
            self.envtest.stop()
        if self.proc is not None:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------------- watch
class Watcher:
    """Follows GemmaDeployments, Deployments, Services and Events in the namespace, in a thread."""

    def __init__(self, api: Any):
        self.api = api
        self.cr_seen: dict[str, float] = {}
        self.deployment_seen: dict[str, float] = {}
        self.last_event = time.monotonic()
        self.events: collections.Counter = collections.Counter()  # (kind, type) -> n
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)
        self._stop: asyncio.Event | None = None

    def start(self) -> Watcher:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the watches did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_event

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        import aiohttp
        from gemma_operator.kube import _ssl_context

        self._stop = asyncio.Event()
        info = self.api.connection_info()
        session = aiohttp.ClientSession(headers={"User-Agent": BENCH_UA, "Accept": "application/json"},
                                        connector=aiohttp.TCPConnector(ssl=_ssl_context(info)),
                                        read_bufsize=2**22, timeout=aiohttp.ClientTimeout(total=None))
        started = [asyncio.Event() for _ in WATCHED]
        tasks = [asyncio.create_task(self._watch(session, kind, path, ev))
                 for (kind, path), ev in zip(WATCHED.items(), started)]
        await asyncio.gather(*(ev.wait() for ev in started))
        self._ready.set()
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()

    async def _watch(self, session: Any, kind: str, path: str, started: asyncio.Event) -> None:
        url = self.api.server + path
        while True:  # a real server answers 429 "storage is (re)initializing" just after a CRD is Established
            async with session.get(url) as resp:
                if resp.status == 200:
                    rv = (await resp.json())["metadata"]["resourceVersion"]
                    break
                if resp.status != 429:
                    raise RuntimeError(f"listing {path}: HTTP {resp.status}: {(await resp.text())[:300]}")
                await asyncio.sleep(float(resp.headers.get("Retry-After") or 1))
        while True:
            params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "3600"}
            async with session.get(url, params=params) as resp:
                started.set()
                async for line in resp.content:
                    if not line.strip():
                        continue
                    now = time.monotonic()
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] == "BOOKMARK":
                        continue
                    self.last_event = now
                    self.events[(kind, event["type"])] += 1
                    name = obj["metadata"]["name"]
                    if kind == "GemmaDeployment":
                        self.cr_seen.setdefault(name, now)
                    elif kind == "Deployment" and event["type"] != "DELETED":
                        owner = next((r["name"] for r in obj["metadata"].get("ownerReferences") or []
                                      if r.get("kind") == "GemmaDeployment"), name)
                        self.deployment_seen.setdefault(owner, now)


# -------------------------------------------------------------------------------- operators
OPERATORS = {
    "baseline": lambda port: [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                              f"--liveness=http://127.0.0.1:{port}/healthz",
                              str(ROOT / "bench" / "baseline_operator.py")],
    "gemma": lambda port: [sys.executable, "-m", "gemma_operator", "run", "--", "--standalone", "--all-namespaces",
                           f"--liveness=http://127.0.0.1:{port}/healthz"],
}


def cpu_seconds(pid: int | None) -> float:
    """user + system CPU of a process (and of its waited-for children) so far."""
    if pid is None:
        return float("nan")
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def start_spy(pid: int, output: pathlib.Path) -> subprocess.Popen:
    """py-spy (the bench extra) records a process, every thread, until stop_spy."""
    spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).with_name("py-spy"))
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "200", "--threads",
                             "--format", "raw", "--output", str(output), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return proc


def stop_spy(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def own_cpu_s() -> float:
    """This process's CPU so far (the watch thread, the creating threads)."""
    t = os.times()
    return t.user + t.system


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(name: str, port: int) -> list[str]:
    """A variant ("gemma+fast") runs its base operator with the variant's environment (--variant)."""
    return OPERATORS[name.split("+")[0]](port)


class Operator:
    source: str | None = None  # --gemma-src: another checkout's operator/ folder, for before/after
    variants: dict[str, dict[str, str]] = {}  # --variant: name -> extra environment

    def __init__(self, name: str, server: Server, log: pathlib.Path, profile: pathlib.Path | None = None):
        self.name, self.server, self.log, self.profile = name, server, log, profile
        self.proc: subprocess.Popen | None = None
        self.spy: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Operator:
        port = free_port()
        env = dict(os.environ, KUBECONFIG=str(self.server.api.kubeconfig), GEMMA_OPERATOR_METRICS_PORT="0",
                   PYTHONPATH=os.pathsep.join(filter(None, [self.source, str(ROOT / "operator"),
                                                            os.environ.get("PYTHONPATH")])),
                   **self.variants.get(self.name, {}))
        before = self.server.counts()
        self.proc = subprocess.Popen(command(self.name, port), env=env, stdout=self.log.open("a"),
                                     stderr=subprocess.STDOUT, cwd=ROOT)
        if self.profile is not None:
            self.start_profile(self.profile)
        deadline = time.monotonic() + timeout
        while True:  # liveness answers, and (emulator) the operator's watch of the CRs is open
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    pass
                now = self.server.counts()
                if now is None or (now.minus(before).operator()[("watch", "gemmadeployments")] > 0):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} was not ready in {timeout}s: see {self.log}")
            time.sleep(0.1)
        time.sleep(1.0)  # its watches' initial (empty) listings
        return self

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def peak_rss_mb(self) -> float:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def start_profile(self, output: pathlib.Path) -> None:
        self.spy = start_spy(self.proc.pid, output)

    def stop_profile(self) -> None:
        stop_spy(self.spy)
        self.spy = None

    def stop(self) -> None:
        self.stop_profile()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -------------------------------------------------------------------------------- the run
def gemma_deployment(i: int) -> dict:
    return {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
            "metadata": {"name": f"gd-{i:05d}", "namespace": NS}, "spec": {}}


def create_all(api: Any, n: int, threads: int) -> None:
    """N creates from `threads` threads, each with its own connection pool."""
    def work(indices: range) -> None:
        client = dataclasses.replace(api, _client=None)
        client.client.user_agent = BENCH_UA
        for i in indices:
            client.request("POST", GD_PATH, gemma_deployment(i))
        client.close()

    workers = [threading.Thread(target=work, args=(range(t, n, threads),)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def versions(api: Any) -> dict[tuple[str, str], str]:
    result = {}
    for kind, path in WATCHED.items():
        for item in api.request("GET", path)["items"]:
            result[(kind, item["metadata"]["name"])] = item["metadata"]["resourceVersion"]
    return result


def changed(before: dict, after: dict) -> collections.Counter:
    """Objects written between two listings, by kind (new, changed or gone)."""
    keys = set(before) | set(after)
    return collections.Counter(k[0] for k in keys if before.get(k) != after.get(k))


def wait_quiet(watcher: Watcher, quiet: float, timeout: float) -> float:
    start = time.monotonic()
    while watcher.quiet_for() < quiet and time.monotonic() - start < timeout:
        time.sleep(0.2)
    return time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


def run_one(name: str, args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    say(f"[{name}] starting the API server")
    load0 = os.getloadavg()[0]
    server = Server(workdir / name)
    api = server.api
    operator = None
    try:
        api.apply_crds()
        nodes = {}  # fixtures share some nodes (a default pool): each name once
        for fixture in args.nodes.split(","):
            path = ROOT / "tests" / "fixtures" / "nodes" / f"{fixture}.yaml"
            for node in yaml.safe_load(path.read_text())["items"]:
                nodes.setdefault(node["metadata"]["name"], node)
        for node in nodes.values():
            api.create_node(node)
        api.create_namespace(NS)
        watcher = Watcher(api).start()
        profile = workdir / f"{name}.pyspy.txt" if args.profile else None
        operator = Operator(name, server, workdir / f"{name}.log", profile).start()
        c0 = server.counts()
        # The emulator's and this process's own samples over the load too (this one: the watch, the
        # creating threads). Started before the CPU readings, like the operator's.
        spies = []
        if args.profile:
            pids = {"emulator": server.proc.pid if server.proc else None, "bench": os.getpid()}
            spies = [start_spy(pid, workdir / f"{name}.{who}.pyspy.txt") for who, pid in pids.items() if pid]
        cpu0 = operator.cpu_s(), server.cpu_s(), own_cpu_s()
        e0 = dict(watcher.events)

        say(f"[{name}] creating {args.n} GemmaDeployments from {args.threads} threads")
        t0 = time.monotonic()
        create_all(api, args.n, args.threads)
        created_s = time.monotonic() - t0
        deadline = t0 + args.timeout
        while len(watcher.deployment_seen) < args.n and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = dict(watcher.deployment_seen)
        all_s = (max(seen.values()) - t0) if len(seen) >= args.n else float("nan")
        latencies = [(seen[k] - watcher.cr_seen[k]) * 1000 for k in seen if k in watcher.cr_seen]
        say(f"[{name}] {len(seen)}/{args.n} Deployments, all in {all_s:.1f} s; waiting for quiet")
        settle_s = wait_quiet(watcher, args.quiet, args.timeout) - args.quiet
        operator.stop_profile()
        for spy in spies:
            stop_spy(spy)
        c1 = server.counts()
        cpu1 = operator.cpu_s(), server.cpu_s(), own_cpu_s()
        load_events = {f"{k[0]}/{k[1]}": n - e0.get(k, 0) for k, n in watcher.events.items() if n - e0.get(k, 0)}

        say(f"[{name}] idle {args.idle:.0f} s")
        v1, e1 = versions(api), dict(watcher.events)
        time.sleep(args.idle)
        v2 = versions(api)
        idle_changed = changed(v1, v2)
        c2 = server.counts()
        rss = operator.peak_rss_mb()

        say(f"[{name}] {args.probe} more, one at a time")
        probe = []
        if args.profile:
            operator.start_profile(workdir / f"{name}.probe.pyspy.txt")
        for i in range(args.n, args.n + args.probe):
            api.request("POST", GD_PATH, gemma_deployment(i))
            key, until = gemma_deployment(i)["metadata"]["name"], time.monotonic() + 30
            while key not in watcher.deployment_seen and time.monotonic() < until:
                time.sleep(0.002)
            if key in watcher.deployment_seen and key in watcher.cr_seen:
                probe.append((watcher.deployment_seen[key] - watcher.cr_seen[key]) * 1000)
        wait_quiet(watcher, args.quiet, args.timeout)
        operator.stop_profile()
        c2b = server.counts()

        say(f"[{name}] restart, then {args.restart_wait:.0f} s")
        operator.stop()
        v3 = versions(api)
        operator = Operator(name, server, workdir / f"{name}.log").start()
        time.sleep(args.restart_wait)
        wait_quiet(watcher, args.quiet, args.timeout)
        v4 = versions(api)
        restart_changed = changed(v3, v4)
        rss_restart = operator.peak_rss_mb()
        operator.stop()
        operator = None
        c3 = server.counts()
        watcher.stop()
        return {
            "name": name, "n": args.n, "server": server.kind, "load": (load0, os.getloadavg()[0]),
            "deployments": len(seen), "create_s": created_s, "all_s": all_s, "settle_s": settle_s,
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99),
            "idle_writes": sum(idle_changed.values()), "idle_by_kind": dict(idle_changed),
            "restart_writes": sum(restart_changed.values()), "restart_by_kind": dict(restart_changed),
            "one_ms": [round(x, 1) for x in probe], "one_p50_ms": percentile(probe, 50),
            "one_max_ms": max(probe, default=float("nan")),
            "rss_mb": rss, "operator_cpu_s": cpu1[0] - cpu0[0], "server_cpu_s": cpu1[1] - cpu0[1],
            "bench_cpu_s": cpu1[2] - cpu0[2],
            "rss_restart_mb": rss_restart,
            "load_requests": _rows(c1.minus(c0).operator()) if c1 else None,
            "idle_requests": _rows(c2.minus(c1).operator()) if c2 else None,
            "restart_requests": _rows(c3.minus(c2b).operator()) if c3 else None,
            "load_writes": _rows(c1.minus(c0).writes) if c1 else None,
            "load_request_cpu_s": ({who: {k: round(v, 3) for k, v in _rows(c).items()}
                                    for who, c in c1.minus(c0).cpu.items()} if c1 else None),
            "watch_events": load_events,
            "watch_events_after_load": {f"{k[0]}/{k[1]}": n - e1.get(k, 0) for k, n in watcher.events.items()
                                        if n - e1.get(k, 0)},
        }
    finally:
        if operator is not None:
            operator.stop()
        server.stop()


def _rows(counter: collections.Counter) -> dict[str, int]:
    rows = sorted(counter.items(), key=lambda kv: (kv[0][1], kv[0][0]))  # by resource, then verb
    return {f"{verb} {resource}": n for (verb, resource), n in rows if n}


# ------------------------------------------------------------------------------- printing
def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ratio(a: float, b: float) -> str:
    if abs(b) < 0.05 or b != b or a != a:
        return "-" if a == b else "n/a"
    return f"{a / b:.2f}x"


def ratio_of(a: dict, b: dict, key: str) -> float:
    return a[key] / b[key] if b[key] else float("inf")


def report(rows: list[dict]) -> str:
    cols = [("1by1 p50", "one_p50_ms", "{:.0f}"), ("1by1 max", "one_max_ms", "{:.0f}"), ("p50 ms", "p50_ms", "{:.0f}"),
            ("p95 ms", "p95_ms", "{:.0f}"), ("p99 ms", "p99_ms", "{:.0f}"),
            ("all-N s", "all_s", "{:.1f}"), ("quiet+ s", "settle_s", "{:.1f}"), ("idle w", "idle_writes", "{}"),
            ("restart w", "restart_writes", "{}"), ("RSS MB", "rss_mb", "{:.0f}"),
            ("op CPU s", "operator_cpu_s", "{:.1f}"), ("api CPU s", "server_cpu_s", "{:.1f}"),
            ("bench CPU", "bench_cpu_s", "{:.1f}"), ("req", "load_total", "{}"), ("req/CR", "load_per_cr", "{:.1f}")]
    for row in rows:
        total = sum((row["load_requests"] or {}).values()) if row["load_requests"] is not None else None
        row["load_total"] = total if total is not None else float("nan")
        row["load_per_cr"] = total / row["n"] if total is not None else float("nan")
    width, nw = 10, max(10, *(len(r["name"]) + 2 for r in rows))
    out = [f"{rows[0]['n']} GemmaDeployments, {rows[0]['server']} API server, {os.cpu_count()} CPUs",
           "operator".ljust(nw) + "".join(h.rjust(width) for h, _, _ in cols)]
    for row in rows:
        cells = []
        for _, key, fmt in cols:
            value = row[key]
            cells.append((fmt.format(value) if value == value else "n/a").rjust(width))
        out.append(row["name"].ljust(nw) + "".join(cells))
    base = next((r for r in rows if r["name"] == "baseline"), None)
    others = [r for r in rows if r is not base]
    if base is not None:
        for g in others:  # each operator (and --variant) over the floor, column by column
            label = "ratio" if len(others) == 1 else f"/{g['name']}"
            out.append(label.ljust(nw) + "".join(ratio(g[key], base[key]).rjust(width) for _, key, _ in cols))
    out.append("(1by1 = CR seen -> Deployment seen, ms, for CRs created one at a time after the idle window, "
               "N already held;\n p50/p95/p99/all-N: the N created at once; "
               "req = API requests by the operator while reconciling the N, server side; quiet+ = time after "
               "all-N until no write for the quiet window; w = objects whose resourceVersion changed;\n"
               " CPU s = CPU seconds of the operator's, the API server's and this benchmark's process from the first "
               "create to quiet)")
    if base is not None:
        out.append("")
        out.append("over the floor (goals, issue 20: all-N and p50 <= 1.3x, <= 3.5 requests per resource)")
        for g in others:
            figures = [("1by1 p50", "one_p50_ms"), ("p50", "p50_ms"), ("p95", "p95_ms"), ("all-N", "all_s"),
                       ("req/CR", "load_per_cr"), ("RSS", "rss_mb"), ("op CPU", "operator_cpu_s"),
                       ("api CPU", "server_cpu_s")]
            goals = [ratio_of(g, base, "all_s") <= 1.3, ratio_of(g, base, "p50_ms") <= 1.3]
            counted = g["load_per_cr"] == g["load_per_cr"]  # nan on a real server: requests are not counted
            verdict = "met" if all(goals) and (not counted or g["load_per_cr"] <= 3.5) else "missed"
            out.append(f"  {g['name']}: " + ", ".join(f"{label} {ratio(g[key], base[key])}" for label, key in figures)
                       + (f"; req/CR {g['load_per_cr']:.2f}: goals {verdict}" if counted
                          else f"; all-N and p50 goals {verdict} (requests not counted on this server)"))
    if all(r["load_requests"] is not None for r in rows):
        out.append("")
        out.append("API requests by the operator while reconciling, by verb and resource")
        keys = sorted({k for r in rows for k in r["load_requests"]}, key=lambda k: k.split(" ", 1)[::-1])
        out.append("verb resource".ljust(38) + "".join(r["name"].rjust(width) for r in rows))
        for key in keys:
            out.append(key.ljust(38) + "".join(str(r["load_requests"].get(key, 0)).rjust(width) for r in rows))
        out.append("")
        out.append("the API server's CPU while reconciling: ms per request by verb and resource (operator's, then "
                   "the benchmark's), and the rest (watch streams, connections)")
        cpu = [r["load_request_cpu_s"] or {} for r in rows]
        keys = sorted({(w, k) for c in cpu for w in c for k in c[w]}, key=lambda wk: (wk[0] != "operator", wk[1]))
        out.append("verb resource".ljust(38) + "".join(r["name"].rjust(width + 2) for r in rows))
        for who, key in keys:
            cells = []
            for r, c in zip(rows, cpu):
                n = (r["load_requests"] if who == "operator" else {}).get(key) or 0
                seconds = c.get(who, {}).get(key, 0.0)
                cells.append((f"{1000 * seconds / n:.2f}" if n else f"{seconds:.2f}s").rjust(width + 2))
            out.append(f"{key} ({who})"[:37].ljust(38) + "".join(cells))
        out.append("rest, s".ljust(38) + "".join(
            f"{r['server_cpu_s'] - sum(sum(v.values()) for v in c.values()):.2f}".rjust(width + 2)
            for r, c in zip(rows, cpu)))
        for phase in ("idle_requests", "restart_requests"):
            out.append(f"{phase.replace('_', ' ')}: " + "; ".join(
                f"{r['name']}: " + (", ".join(f"{k} {v}" for k, v in r[phase].items()) or "none") for r in rows))
    out.append("")
    out.append("watch events the benchmark saw while the N were reconciled, by kind and type")
    for r in rows:
        out.append(f"  {r['name']}: " + ", ".join(f"{k} {v}" for k, v in sorted(r["watch_events"].items())))
    for r in rows:
        if r["idle_writes"] or r["restart_writes"]:
            out.append(f"{r['name']} writes: idle {r['idle_by_kind']}, restart {r['restart_by_kind']}")
    return "\n".join(out)


def main() -> int:
    if "--serve-emulator" in sys.argv:
        serve_emulator(int(sys.argv[-1]) if sys.argv[-1].isdigit() else None, "fixture-watch" in sys.argv)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="GemmaDeployments to create (default 1000)")
    p.add_argument("--threads", type=int, default=8, help="client threads creating them")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idling before counting writes")
    p.add_argument("--restart-wait", type=float, default=15.0, help="seconds after a restart before counting")
    p.add_argument("--probe", type=int, default=20, help="then this many more, one at a time (latency when idle)")
    p.add_argument("--quiet", type=float, default=3.0, help="seconds without a write that count as settled")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--operators", default="baseline,gemma")
    p.add_argument("--nodes", default="gke-l4,gke-cpu-only", help="node fixtures (tests/fixtures/nodes)")
    p.add_argument("--profile", action="store_true", help="py-spy (the bench extra) records each load phase")
    p.add_argument("--workdir", type=pathlib.Path, help="logs, profiles (default: a temporary directory)")
    p.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    p.add_argument("--event-log", type=int, help="the emulator's watch log length (fixture: 10,000). Every write "
                   "costs O(log x open watches) there; shorter is cheaper, but a lagging watch can then miss "
                   "events unnoticed: for diagnosis only")
    p.add_argument("--fixture-watch", action="store_true", help="serve watches as the fixture does (a rescan of "
                   "the whole event log per write and open watch) instead of from each stream's last read")
    p.add_argument("--gemma-src", help="import gemma_operator from this folder instead (a before/after run)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=VAR=VALUE[,VAR=VALUE]",
                   help="run operator NAME (e.g. gemma+x, listed in --operators) as its base (gemma) with "
                   "this environment; repeatable. Back-to-back A/B runs on one machine")
    args = p.parse_args()
    Operator.source = args.gemma_src
    for variant in args.variant:
        name, _, assignments = variant.partition("=")
        env: dict[str, str] = {}
        for part in filter(None, assignments.split(",")):
            if "=" in part:
                var, _, value = part.partition("=")
                env[var] = value
            elif env:  # a comma inside the previous value: GEMMA_PROTO=queue,noplanned
                env[var] += "," + part
        Operator.variants[name] = env
    Server.event_log = args.event_log
    Server.fixture_watch = args.fixture_watch
    workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="gemma-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"logs in {workdir}; load average {os.getloadavg()[0]:.2f}")
    rows = [run_one(name, args, workdir) for name in args.operators.split(",")]
    print(report(rows))
    # What a reader needs to compare runs on a shared machine: the variants and the load around each operator.
    for name, env in Operator.variants.items():
        print(f"variant {name}: " + ",".join(f"{k}={v}" for k, v in env.items()))
    print("load average (1 min) at each operator's start and end: "
          + "; ".join(f"{row['name']} {row['load'][0]:.1f} -> {row['load'][1]:.1f}" for row in rows if "load" in row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.profile:
        for name in args.operators.split(","):
            for part in ("", ".emulator", ".bench"):
                summarize_profile(workdir / f"{name}{part}.pyspy.txt", buckets=BUCKETS[part or ".operator"])
            summarize_profile(workdir / f"{name}.probe.pyspy.txt")
    return 0


# Where a sample goes: the innermost frame that matches one of these (substring of "function (file:line)"),
# in this order per frame. Frames of the standard library (json, copy, asyncio) are charged to the
# caller that matches: json.dumps under handlers._digest is "digest", under aiohttp "http".
_OPERATOR_BUCKETS = [
    ("import/start-up", ("<frozen importlib", "<module> (")),
    ("our: digest (json+sha256)", ("_digest (handlers.py",)),
    ("our: index functions", ("gemma_nodes (", "gemma_resources (", "gemma_deployments (", "gemma_services (",
                              "gemma_pdbs (", "gemma_hpas (", "gemma_pods (", "gemma_claims (", "gemma_jobs (",
                              "_child (handlers.py", "_metadata (handlers.py", "_snapshot (handlers.py")),
    ("our: event handlers", ("child_event (", "pod_event (", "cache_event (", "node_event (")),
    ("our: spec validation (pydantic)", ("model_validate", "model_dump", "pydantic")),
    ("our: planner + inventory", ("planner.py", "inventory.py", "sizing.py", "capacity.py", "catalog/")),
    ("our: render", ("render.py", "runtimes/", "cache.py", "scaling.py")),
    ("our: rollout", ("rollout.py",)),
    ("our: status compute", ("status.py", "pods.py")),
    ("our: kube client (aiohttp)", ("kube.py",)),
    ("our: handlers other", ("handlers.py",)),
    ("logging", ("logging/__init__.py", "kopf/_core/engines/posting.py", "kopf/_cogs/helpers/loggers")),
    ("kopf: watch stream (decode)", ("kopf/_cogs/clients/watching.py",)),
    ("kopf: queueing / workers", ("kopf/_core/reactor/queueing.py",)),
    ("kopf: indexing", ("kopf/_core/engines/indexing.py",)),
    ("kopf: diffs / diff-base / progress", ("kopf/_cogs/configs/diffbase.py", "kopf/_cogs/configs/progress.py",
                                            "kopf/_cogs/structs/diffs.py", "kopf/_cogs/structs/dicts.py")),
    ("kopf: processing / causes / handlers", ("kopf/_core/reactor/processing.py", "kopf/_core/actions/",
                                              "kopf/_core/intents/", "kopf/_cogs/structs/")),
    ("kopf: patching / API client", ("kopf/_cogs/clients/",)),
    ("kopf: other", ("kopf/",)),
    ("aiohttp", ("aiohttp/",)),
    ("asyncio loop", ("asyncio/",)),
]
_EMULATOR_BUCKETS = [
    ("watch: scan of the event log", ("_serve_watch_stream (", "__iter__ (reconcile.py")),
    ("apply / patch / merge", ("fields.py", "_apply", "_patch", "merge")),
    ("schema defaults / validation", ("schema.py",)),
    ("store: commit + deepcopy", ("_commit (", "deepcopy")),
    ("request parsing / routing (kmock)", ("kmock/",)),
    ("json", ("json/",)),
    ("aiohttp", ("aiohttp/",)),
    ("asyncio loop", ("asyncio/",)),
    ("emulator other", ("emulator.py",)),
]
_BENCH_BUCKETS = [
    ("watch thread", ("_main (reconcile.py", "Watcher")),
    ("creating threads", ("create_all", "work (reconcile.py")),
    ("waiting loop", ("run_one (",)),
]
BUCKETS = {".operator": _OPERATOR_BUCKETS, ".emulator": _EMULATOR_BUCKETS, ".bench": _BENCH_BUCKETS}


def _bucket(frames: list[str], buckets: list) -> str:
    for frame in reversed(frames):
        for name, needles in buckets:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def summarize_profile(path: pathlib.Path, top: int = 25, buckets: list | None = None) -> None:
    """Own and total samples per function, from py-spy's raw (collapsed) output; with `buckets`,
    first the samples by part of the code (the innermost matching frame decides)."""
    if not path.exists():
        say(f"no profile at {path}")
        return
    own, total, by_bucket, samples = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith("thread ("):
            frames = frames[1:]  # --threads: the thread's name first
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
        if buckets:
            by_bucket[_bucket(frames, buckets)] += n
    if buckets:
        print(f"\nprofile {path.name}: {samples} samples (200/s of a busy thread), by part")
        for name, n in by_bucket.most_common():
            print(f"  {100 * n / samples:5.1f}%  {name}")
    print(f"\nprofile {path.name}: {samples} samples; top by total, then by own")
    for frame, n in total.most_common(top):
        print(f"  {100 * n / samples:5.1f}%  {frame}")
    print("  --")
    for frame, n in own.most_common(top):
        print(f"  {100 * n / samples:5.1f}%  {frame}")


if __name__ == "__main__":
    sys.exit(main())
