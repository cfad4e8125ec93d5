"""bench/coldstart.py (`make bench-coldstart`): its figures, its arithmetic, and its llama.cpp runs.

The vLLM cold/warm/offline starts (about a minute each) run only in `make bench-coldstart`,
which exits non-zero when a warm start fetches; here the llama.cpp pair runs through the
bench's own code (a second or two), so a broken bench fails `make test`.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.dataplane import servers

pytestmark = pytest.mark.dataplane

BENCH = servers.ROOT / "bench" / "coldstart.py"


@pytest.fixture(scope="module")
def coldstart():
    spec = importlib.util.spec_from_file_location("coldstart", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["coldstart"] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("coldstart", None)


def test_every_published_throughput_has_a_source(coldstart):
    figures = coldstart.load_figures()
    assert figures
    assert all(f.source.startswith("https://cloud.google.com/") and f.mib_per_s > 0 for f in figures), figures


def test_a_figure_without_a_source_is_refused(coldstart, tmp_path):
    bad = tmp_path / "figures.yaml"
    bad.write_text("figures:\n  - {name: x, mib_per_s: 100, source: somewhere}\n")
    with pytest.raises(ValueError, match="https source"):
        coldstart.load_figures(bad)


def test_31b_bf16_is_the_catalogs_62_gb_and_the_prediction_is_bytes_over_throughput(coldstart):
    n_bytes = coldstart.checkpoint_bytes("gemma4", "31b", "bf16")
    assert 60e9 < n_bytes < 64e9, n_bytes  # the "about 62 GB": 30.7B params x 2 bytes
    for name, rate, seconds, _ in coldstart.predictions(coldstart.load_figures(), n_bytes):
        assert seconds == pytest.approx(n_bytes / (rate * 2**20)), name


def test_llamacpp_warm_start_fetches_no_bytes(coldstart, tmp_path):
    cold, warm = coldstart.llamacpp_rows(tmp_path, timeout=120)
    assert (cold.run, warm.run) == ("cold", "warm")
    assert cold.files == 1 and cold.file_bytes > 0 and cold.ranged_bytes == 0, cold
    assert warm.file_bytes == 0 and warm.must_fetch_nothing, warm
