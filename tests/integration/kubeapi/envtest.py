"""Real etcd + kube-apiserver (+ kube-controller-manager) on loopback, started envtest-style.

The binaries come from ``KUBEBUILDER_ASSETS`` (a directory holding ``etcd``, ``kube-apiserver``
and optionally ``kube-controller-manager``) or from ``TEST_ASSET_ETCD``,
``TEST_ASSET_KUBE_APISERVER`` and optionally ``TEST_ASSET_KUBE_CONTROLLER_MANAGER``. The server
gets a generated CA, a serving certificate for 127.0.0.1/localhost and an admin client
certificate in ``system:masters``. Process logs go to ``<workdir>/<name>.log`` (pytest's tmp dir).
Without a kubelet, Pods stay Pending. Nodes created by tests have no kubelet either: the
``create_nodes`` fixture renews their Leases as a kubelet would; else the node lifecycle controller
marks them NotReady 50 s (its grace period) after it first saw a Node of that name, and it keeps
that record across the tests' deleting and re-creating the same names.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import pathlib
import socket
import ssl
import subprocess
import time
import urllib.request

from .cluster import KubeAPI, write_kubeconfig


@dataclasses.dataclass
class Assets:
    etcd: pathlib.Path
    apiserver: pathlib.Path
    controller_manager: pathlib.Path | None


def find_assets(environ=os.environ) -> tuple[Assets | None, str]:
    """The binaries to use, or None and the reason why not."""
    etcd = environ.get("TEST_ASSET_ETCD")
    apiserver = environ.get("TEST_ASSET_KUBE_APISERVER")
    kcm = environ.get("TEST_ASSET_KUBE_CONTROLLER_MANAGER")
    assets_dir = environ.get("KUBEBUILDER_ASSETS")
    if assets_dir and not (etcd and apiserver):
        base = pathlib.Path(assets_dir)
        etcd = etcd or str(base / "etcd")
        apiserver = apiserver or str(base / "kube-apiserver")
        if not kcm and (base / "kube-controller-manager").exists():
            kcm = str(base / "kube-controller-manager")
    if not (etcd and apiserver):
        return None, ("real API server tier: set KUBEBUILDER_ASSETS (a directory with etcd and "
                      "kube-apiserver) or TEST_ASSET_ETCD and TEST_ASSET_KUBE_APISERVER; "
                      "`make test-real` runs it")
    for path in (etcd, apiserver) + ((kcm,) if kcm else ()):
        if not os.access(path, os.X_OK):
            return None, f"real API server tier: {path} is not an executable file"
    return Assets(pathlib.Path(etcd), pathlib.Path(apiserver), pathlib.Path(kcm) if kcm else None), ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- certificates ---------------------------------------------------------------------------


def make_pki(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def write(name: str, data: bytes) -> pathlib.Path:
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gemma-envtest-ca")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, orgs: list[str], usage, sans=None):
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    serving_key, serving_cert = leaf("kube-apiserver", [], ExtendedKeyUsageOID.SERVER_AUTH, [
        x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
    admin_key, admin_cert = leaf("gemma-admin", ["system:masters"], ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    return {
        "ca": write("ca.crt", ca_cert.public_bytes(pem)),
        "ca_key": write("ca.key", key_pem(ca_key)),
        "serving_cert": write("apiserver.crt", serving_cert.public_bytes(pem)),
        "serving_key": write("apiserver.key", key_pem(serving_key)),
        "admin_cert": write("admin.crt", admin_cert.public_bytes(pem)),
        "admin_key": write("admin.key", key_pem(admin_key)),
        "sa_key": write("sa.key", key_pem(sa_key)),
        "sa_pub": write("sa.pub", sa_key.public_key().public_bytes(
            pem, serialization.PublicFormat.SubjectPublicKeyInfo)),
    }


# --- processes --------------------------------------------------------------------------------


class EnvTest:
    # A /24, as a small cluster has: 245 Services at most (bench/reconcile.py, which creates 1,000, widens it).
    service_cluster_ip_range = "10.0.0.0/24"

    def __init__(self, assets: Assets, workdir: pathlib.Path, *, controller_manager: bool = True):
        self.assets = assets
        self.workdir = workdir
        self.use_kcm = controller_manager and assets.controller_manager is not None
        self.processes: list[tuple[str, subprocess.Popen, pathlib.Path]] = []
        self.api: KubeAPI | None = None

    def start(self, timeout: float = 60, before_controllers=None) -> KubeAPI:
        """Start etcd and kube-apiserver, call ``before_controllers(api)`` (e.g. apply the CRDs),
        then start kube-controller-manager and wait for it to publish ``kube-root-ca.crt``.

        CRDs applied before the controller manager starts are in its discovery from the start: its
        garbage collector then watches their resources at once, instead of after its next
        discovery resync (30 s), so deleting a custom resource collects its dependents at once."""
        pki = make_pki(self.workdir)
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", [
            str(self.assets.etcd),
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync=true",
        ])
        self._wait_http(f"{etcd_url}/health", timeout, "etcd")
        server = f"https://127.0.0.1:{api_port}"
        self._spawn("kube-apiserver", [
            str(self.assets.apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={pki['serving_cert']}", f"--tls-private-key-file={pki['serving_key']}",
            f"--client-ca-file={pki['ca']}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki['sa_pub']}",
            f"--service-account-signing-key-file={pki['sa_key']}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={self.service_cluster_ip_range}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
        ])
        kubeconfig = write_kubeconfig(self.workdir / "kubeconfig", server, ca=pki["ca"],
                                      cert=pki["admin_cert"], key=pki["admin_key"])
        self._wait_https(f"{server}/readyz", pki, timeout)
        self.api = KubeAPI(kind="envtest", server=server, kubeconfig=kubeconfig, ca_path=pki["ca"],
                           cert_path=pki["admin_cert"], key_path=pki["admin_key"],
                           controller_manager=self.use_kcm)
        if before_controllers is not None:
            before_controllers(self.api)
        if self.use_kcm:
            self._spawn("kube-controller-manager", [
                str(self.assets.controller_manager),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
                f"--service-account-private-key-file={pki['sa_key']}",
                f"--root-ca-file={pki['ca']}",
                "--use-service-account-credentials=false",
                # Controller names changed across releases; override here if one must go.
                "--controllers=" + os.environ.get("GEMMA_ENVTEST_KCM_CONTROLLERS", "*"),
            ])
            self._wait_for_controllers(timeout)
        return self.api

    def _wait_for_controllers(self, timeout: float) -> None:
        """Until kube-controller-manager runs its controllers: its root CA publisher has written
        ``kube-root-ca.crt`` into the ``default`` namespace."""
        import kubernetes

        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                self.api.request("GET", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
                return
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"kube-controller-manager published no kube-root-ca.crt in {timeout}s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        for name, process, _ in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        self.processes.clear()

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.workdir / f"{name}.log"
        process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        self.processes.append((name, process, log))

    def _check_alive(self) -> None:
        for name, process, log in self.processes:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def _wait_http(self, url: str, timeout: float, what: str, context: ssl.SSLContext | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not become healthy in {timeout}s")
            time.sleep(0.2)

    def _wait_https(self, url: str, pki: dict, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        context.load_cert_chain(str(pki["admin_cert"]), str(pki["admin_key"]))
        self._wait_http(url, timeout, "kube-apiserver", context)
