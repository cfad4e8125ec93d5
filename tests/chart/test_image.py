"""images/operator/Dockerfile keeps its contract (Docker cannot run here, so the text is checked)."""

from __future__ import annotations

import re

import yaml

from .chart_files import CHART, ROOT

DOCKERFILE = (ROOT / "images" / "operator" / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, flags=re.M)


def test_multi_stage_on_a_pinned_slim_base():
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert instructions("FROM") == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    assert "pip wheel" in DOCKERFILE and "--constraint /tmp/constraints.txt" in DOCKERFILE


def test_runs_as_numeric_non_root_user_and_starts_the_operator():
    (user,) = instructions("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit())
    assert instructions("ENTRYPOINT") == ['["gemma-operator", "run"]']


def test_chart_runs_the_image_user():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (user,) = instructions("USER")
    assert values["podSecurityContext"]["runAsUser"] == int(user.split(":")[0])


def test_build_context_is_an_allow_list():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "exclude everything first, then allow what the build needs"
    assert {"!pyproject.toml", "!constraints.txt", "!README.md", "!operator/"} <= set(lines)
