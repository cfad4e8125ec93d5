"""How the operator process and kopf are tuned: measured in bench/reconcile.py (bench/README.md).

Settings only, no policy: kopf's API back-off and idle workers, a diff base that kopf never needs
here, and the garbage collector. `GEMMA_OPERATOR_BENCH_WITHOUT` leaves parts out, for the
benchmark's A/B runs only.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import kopf

# kopf retries a failed API request (5xx, 403, a lost connection) with these pauses, then gives
# up; a watch that gives up stops the whole operator. kopf's default (1 to 21 s, 54 s in all)
# is shorter than a control-plane upgrade can keep the API away: this rides out about 10 minutes
# and then resumes where it was, instead of exiting into a crash-loop back-off.
API_ERROR_BACKOFFS_S = (1, 1, 2, 3, 5, 8, 13, 21, 30, 60, 60, 60, 60, 60, 60, 60, 60, 60)
# The garbage collector's thresholds (Python's: 700, 10, 10). Reconciles allocate many short-lived
# containers (JSON bodies, rendered objects): at 700 allocations a young collection runs every few
# events, and the full collections walk the ~130,000 long-lived objects (the catalog, modules,
# indices) at 0.1-0.3 s each, the 1by1 latency's outliers. Those are frozen once after start-up
# (gc.freeze) and collections run this much less often: GC time 0.57 -> 0.10 s and operator CPU
# -0.5 s at N=1000 in bench/reconcile.py (bench/README.md). Cycles are still collected.
GC_THRESHOLDS = (50_000, 20, 100)
# Parts to leave out, for bench/reconcile.py's A/B runs only (`--variant`): a comma list of "gc",
# "plancache", "diffbase", "create" (a child absent from the index is applied, not created).
WITHOUT_ENV = "GEMMA_OPERATOR_BENCH_WITHOUT"


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base storage, building nothing. kopf deep-copies every watched body on every
    event to build a diff base ("essence"), read only by change-detecting handlers (create, update,
    resume, delete, field) and daemons or timers, and stored by the former. This operator has none
    of those (kopf/_core/reactor/processing.py `_detect_causes`, `process_changing_cause`), only
    event handlers and indices: so kopf neither reads nor writes it (no annotation)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()  # the same as built: no diff

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass

# A per-object kopf worker lingers this long after its last event (default 5 s): with 1,000
# resources and 2,000 children, 3,000 idle workers held ~30 MB of RSS (bench/README.md).
IDLE_WORKER_S = 0.5


def left_out(env: Mapping[str, str]) -> set[str]:
    return set(filter(None, env.get(WITHOUT_ENV, "").split(",")))


def configure(settings: kopf.OperatorSettings, without: set[str] = frozenset()) -> None:
    settings.networking.error_backoffs = API_ERROR_BACKOFFS_S
    settings.queueing.idle_timeout = IDLE_WORKER_S
    if "diffbase" not in without:
        settings.persistence.diffbase_storage = NoDiffBase()


def freeze_heap(without: set[str] = frozenset()) -> None:
    """Freeze what start-up made and collect less often (GC_THRESHOLDS); call it last in start-up."""
    if "gc" not in without:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
