"""Shared fixtures. Nothing here needs a cluster."""

from __future__ import annotations

import pathlib
import re
import uuid

import pytest
import yaml

from gemma_operator import catalog as catalog_mod

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODES = ROOT / "tests" / "fixtures" / "nodes"


# Each cluster tier is marked by its folder, so `-m "not integration"` and friends work.
TIER_MARKS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = pathlib.Path(item.fspath).relative_to(ROOT / "tests").parts[0]
        if folder in TIER_MARKS:
            item.add_marker(TIER_MARKS[folder])


def node_list(name: str) -> list[dict]:
    return yaml.safe_load((NODES / f"{name}.yaml").read_text())["items"]


@pytest.fixture(scope="session")
def catalog() -> catalog_mod.Catalog:
    return catalog_mod.load()


# The cluster tiers (tests/integration, tests/e2e) each define `kube_api`; these build on it.
@pytest.fixture
def kube(kube_api):
    """The official client's ApiClient for the tier's server, e.g. AppsV1Api(kube)."""
    return kube_api.client


@pytest.fixture
def namespace(kube_api, request: pytest.FixtureRequest):
    """A fresh namespace per test, named after it, deleted afterwards."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    kube_api.create_namespace(name)
    yield name
    kube_api.delete_namespace(name)
