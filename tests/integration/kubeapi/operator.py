"""Run kopf with a handlers module in a background thread, against a KubeAPI."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import kopf

from .cluster import KubeAPI

Handlers = str | Callable[[kopf.OperatorRegistry], None]


def build_registry(handlers: Handlers) -> kopf.OperatorRegistry:
    """A fresh registry holding the handlers, so no test leaks handlers into another.

    ``handlers`` is either a callable that registers into the given registry, or the name of a
    module that registers with plain ``@kopf.on...`` decorators (the default registry): that
    module is (re)imported while the fresh registry is the default one.
    """
    registry = kopf.OperatorRegistry()
    if callable(handlers):
        handlers(registry)
        return registry
    previous = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:
        if handlers in sys.modules:
            importlib.reload(sys.modules[handlers])
        else:
            importlib.import_module(handlers)
    finally:
        kopf.set_default_registry(previous)
    return registry


class OperatorThread:
    """kopf.operator() in its own thread and event loop; stopped through its stop flag."""

    def __init__(self, api: KubeAPI, handlers: Handlers, *,
                 configure: Callable[[kopf.OperatorSettings], None] | None = None,
                 memo: Any = None, clusterwide: bool = True, namespaces: tuple[str, ...] = (),
                 peering: str | None = None, priority: int = 0):
        self.api = api
        self.registry = build_registry(handlers)
        self.memo = memo if memo is not None else kopf.Memo()
        self.clusterwide = clusterwide and not namespaces
        self.namespaces = namespaces
        self.peering, self.priority = peering, priority  # a peering name: join it instead of standalone
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kopf-operator", daemon=True)

        @kopf.on.login(registry=self.registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return api.connection_info()

        @kopf.on.startup(registry=self.registry)
        def settings(settings: kopf.OperatorSettings, **_: Any) -> None:
            # Tests stop the operator within seconds; keep kopf's waits short.
            settings.watching.reconnect_backoff = 0.1
            settings.watching.connect_timeout = 5
            settings.networking.request_timeout = 10
            settings.queueing.exit_timeout = 2
            settings.posting.level = 20  # INFO: Events from handlers' logs are part of the contract
            if configure is not None:
                configure(settings)

    def start(self, timeout: float = 15) -> "OperatorThread":
        self._thread.start()
        waited = 0.0
        while not self._ready.wait(0.05):
            waited += 0.05
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError("the operator stopped before it was ready") from self.error
            if waited > timeout:
                self.stop()
                raise TimeoutError(f"the operator was not ready in {timeout}s")
        return self

    def stop(self, timeout: float = 15) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the operator did not stop in {timeout}s")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            asyncio.run(kopf.operator(
                registry=self.registry,
                memo=self.memo,
                clusterwide=self.clusterwide,
                namespaces=self.namespaces,
                standalone=self.peering is None,
                peering_name=self.peering,
                priority=self.priority,
                stop_flag=self._stop,
                ready_flag=self._ready,
            ))
        except BaseException as e:  # re-raised by start()/stop() in the test's thread
            self.error = e


@contextlib.contextmanager
def operators(api: KubeAPI):
    """A `start(handlers, **kwargs)` for tests; every operator it started is stopped on exit,
    and the first failure to stop is raised after all were stopped."""
    started: list[OperatorThread] = []

    def start(handlers: Handlers, **kwargs: Any) -> OperatorThread:
        operator = OperatorThread(api, handlers, **kwargs).start()
        started.append(operator)
        return operator

    yield start
    errors = []
    for operator in reversed(started):
        try:
            operator.stop()
        except BaseException as e:  # report every failure, stop every operator
            errors.append(e)
    if errors:
        raise errors[0]
