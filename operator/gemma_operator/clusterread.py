"""Read-only access to the cluster a kubeconfig points at, for the CLI.

`plan` without `--nodes` reads the nodes here (a list, nothing else), and `run` checks here
that kopf will find credentials before handing over to it. The operator itself talks to the
API only through `kube.py`; this module is for the command line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Where kopf's login functions (and kubectl) look, in this order.
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_KUBECONFIG = "~/.kube/config"
PAGE_SIZE = 500  # nodes per list request; large clusters are read in pages


class ClusterReadError(Exception):
    """The cluster could not be read: a sentence saying what was tried and what to do."""


@dataclass(frozen=True)
class ClusterNodes:
    """The nodes of one cluster, and which cluster that was."""

    nodes: list[dict[str, Any]]
    context: str
    server: str
    kubeconfig: str

    def describe(self) -> str:
        return f"context {self.context} (server {self.server})"


def kubeconfig_paths(explicit: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """The kubeconfig path list to read, and how it was chosen (kubectl's order: flag, KUBECONFIG, default)."""
    if explicit:
        return explicit, "--kubeconfig"
    if env.get("KUBECONFIG"):
        return env["KUBECONFIG"], "KUBECONFIG"
    return DEFAULT_KUBECONFIG, "the default"


def _existing(paths: str) -> list[str]:
    candidates = [os.path.expanduser(p.strip()) for p in paths.split(os.pathsep) if p.strip()]
    return [p for p in candidates if os.path.isfile(p)]


def credentials_problem(
    env: Mapping[str, str], exists: Callable[[str], bool] = os.path.exists
) -> str | None:
    """Why `run` would find no credentials, in one sentence; None when kopf's login will find some.

    Mirrors the operator's login (handlers.login): the in-cluster service account, else
    KUBECONFIG (every path must exist), else ~/.kube/config.
    """
    if exists(SERVICE_ACCOUNT_TOKEN):
        return None
    if env.get("KUBECONFIG"):
        paths = [p.strip() for p in env["KUBECONFIG"].split(os.pathsep) if p.strip()]
        missing = [p for p in paths if not exists(os.path.expanduser(p))]
        if paths and not missing:
            return None
        where = f"KUBECONFIG={env['KUBECONFIG']} (missing: {', '.join(missing) or 'no path given'})"
    else:
        if exists(os.path.expanduser(DEFAULT_KUBECONFIG)):
            return None
        where = f"KUBECONFIG (unset) and {DEFAULT_KUBECONFIG} (no such file)"
    return (
        f"No cluster credentials found: looked for the in-cluster service account token "
        f"({SERVICE_ACCOUNT_TOKEN}: not there) and a kubeconfig in {where}. "
        "Run inside a cluster, or point KUBECONFIG at a kubeconfig (e.g. after `gcloud container "
        "clusters get-credentials`)."
    )


def read_nodes(kubeconfig: str | None = None, context: str | None = None,
               env: Mapping[str, str] | None = None) -> ClusterNodes:
    """Every Node of the cluster the kubeconfig's (or `context`'s) context points at, as plain dicts.

    Read-only: one list of nodes, in pages. The kubeconfig is never written back (a refreshed
    token stays in memory).
    """
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    paths, chosen_by = kubeconfig_paths(kubeconfig, os.environ if env is None else env)
    if not _existing(paths):
        raise ClusterReadError(
            f"no kubeconfig to read the nodes from: {paths} (from {chosen_by}) does not exist. "
            "Pass --nodes FILE (`kubectl get nodes -o yaml > FILE`), or --kubeconfig PATH."
        )
    try:
        contexts, current = config.list_kube_config_contexts(config_file=paths)
        names = [c["name"] for c in contexts or []]
        if context is not None and context not in names:
            raise ClusterReadError(
                f"{paths}: no context {context!r}; it has {', '.join(names) or 'none'}"
            )
        name = context or (current or {}).get("name")
        api_client = config.new_client_from_config(config_file=paths, context=name, persist_config=False)
    except ConfigException as exc:
        raise ClusterReadError(f"{paths}: cannot use this kubeconfig: {exc}") from None
    server = api_client.configuration.host
    nodes: list[dict[str, Any]] = []
    try:
        core = client.CoreV1Api(api_client)
        token: str | None = None
        while True:
            response = core.list_node(limit=PAGE_SIZE, _continue=token, _preload_content=False,
                                      _request_timeout=30)
            page = json.loads(response.data)
            nodes += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
    except ApiException as exc:
        hint = {401: "the credentials were refused", 403: "this user may not list nodes"}.get(exc.status, "")
        raise ClusterReadError(
            f"listing nodes on context {name} (server {server}) failed: {exc.status} {exc.reason}"
            + (f" ({hint})" if hint else "")
            + ". Pass --nodes FILE to plan from a saved node list."
        ) from None
    except (OSError, HTTPError) as exc:  # connection refused, DNS, TLS
        raise ClusterReadError(
            f"cannot reach context {name} (server {server}): {exc.__class__.__name__}. "
            "Check the connection, or pass --nodes FILE."
        ) from None
    finally:
        api_client.close()
    return ClusterNodes(nodes=nodes, context=name or "", server=server, kubeconfig=paths)
