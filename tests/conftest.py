"""Shared fixtures. Nothing here needs a cluster."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from gemma_operator import catalog as catalog_mod

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODES = ROOT / "tests" / "fixtures" / "nodes"


def node_list(name: str) -> list[dict]:
    return yaml.safe_load((NODES / f"{name}.yaml").read_text())["items"]


@pytest.fixture(scope="session")
def catalog() -> catalog_mod.Catalog:
    return catalog_mod.load()
