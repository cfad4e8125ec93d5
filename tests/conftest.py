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


def decide(catalog: catalog_mod.Catalog, spec: dict, *fixtures: str | list[dict]):
    """The planner's answer (a Plan, or a NoFit) for `spec` on the nodes of the named node fixtures
    (or of node lists given as they are), together."""
    from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
    from gemma_operator.inventory import pools
    from gemma_operator.planner import plan

    parsed = GemmaDeploymentSpec.model_validate(spec)
    nodes = [node for fixture in fixtures for node in (node_list(fixture) if isinstance(fixture, str) else fixture)]
    return plan(parsed, pools(nodes, catalog, parsed.node_selector), catalog)


def planned(catalog: catalog_mod.Catalog, spec: dict, *fixtures: str | list[dict]):
    """`decide`'s answer, which must be a Plan (a NoFit fails the test with its message)."""
    from gemma_operator.planner import Plan

    result = decide(catalog, spec, *fixtures)
    assert isinstance(result, Plan), getattr(result, "message", result)
    return result


def server_args(catalog: catalog_mod.Catalog, spec: dict, fixture: str) -> list[str]:
    """The serving container's args of the Deployment rendered for `spec` on `fixture`'s nodes."""
    from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
    from gemma_operator.render import render

    parsed = GemmaDeploymentSpec.model_validate(spec)
    result = planned(catalog, spec, fixture)
    deployment = next(o for o in render(result, "chat", "team-a", parsed) if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


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
