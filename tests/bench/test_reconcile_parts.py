"""The benchmark's own pieces that its figures rest on: the emulator's event log read from where a
watch stream left off, and the attribution of profile samples to parts of the code."""

from __future__ import annotations

import collections
import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_reconcile", ROOT / "bench" / "reconcile.py")
reconcile = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = reconcile  # its dataclasses look their module up
spec.loader.exec_module(reconcile)

Event = collections.namedtuple("Event", "rv resource type obj")
DEPLOYMENTS, SERVICES = ("apps", "v1", "deployments"), ("", "v1", "services")


def _log(*events: tuple[int, tuple]) -> reconcile.EventLog:
    return reconcile.EventLog((Event(rv, res, "ADDED", {}) for rv, res in events), maxlen=10)


def test_outside_a_watch_stream_the_log_is_the_whole_log() -> None:
    log = _log((1, DEPLOYMENTS), (2, SERVICES))
    assert [e.rv for e in log] == [1, 2]


def test_a_watch_stream_reads_its_resource_from_where_it_last_read() -> None:
    log = _log((1, DEPLOYMENTS), (2, SERVICES), (3, DEPLOYMENTS))
    token = reconcile._WATCH.set([DEPLOYMENTS, None])
    try:
        assert [e.rv for e in list(log)] == [1, 3]  # first read: all of its resource
        assert list(log) == []  # nothing new
        log.append(Event(4, SERVICES, "ADDED", {}))
        log.append(Event(5, DEPLOYMENTS, "MODIFIED", {}))
        assert [e.rv for e in list(log)] == [5]
    finally:
        reconcile._WATCH.reset(token)


def test_a_full_log_drops_the_oldest_and_the_reader_still_gets_the_new() -> None:
    log = reconcile.EventLog((Event(rv, DEPLOYMENTS, "ADDED", {}) for rv in range(1, 4)), maxlen=3)
    token = reconcile._WATCH.set([DEPLOYMENTS, None])
    try:
        assert [e.rv for e in list(log)] == [1, 2, 3]
        log.append(Event(4, DEPLOYMENTS, "ADDED", {}))  # evicts rv 1
        assert [e.rv for e in list(log)] == [4]
        assert log[0].rv == 2  # the fixture's 410 check reads the oldest entry
    finally:
        reconcile._WATCH.reset(token)


@pytest.mark.parametrize(("stack", "part"), [
    # JSON under our digest is the digest's; under kopf's watch, kopf's.
    (["run (kopf/_core/reactor/running.py:81)", "_digest (handlers.py:400)", "dumps (json/__init__.py:231)"],
     "our: digest (json+sha256)"),
    (["run (kopf/_core/reactor/running.py:81)", "watch_objs (kopf/_cogs/clients/watching.py:298)",
      "loads (json/__init__.py:346)"], "kopf: watch stream (decode)"),
    (["reconcile (handlers.py:578)", "plan (planner.py:740)", "kv_cache_gib (sizing.py:109)"], "our: planner + inventory"),
    (["select (selectors.py:468)"], "other"),
])
def test_a_sample_goes_to_its_innermost_matching_part(stack: list[str], part: str) -> None:
    assert reconcile._bucket(stack, reconcile.BUCKETS[".operator"]) == part
