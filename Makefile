# make test: everything a fresh machine needs (venv, Python packages, Kafka jars, Toxiproxy,
# HAProxy, Prometheus, PostgreSQL, Chromium, the Kubernetes test cluster's binaries), then the
# whole test suite.
# make demo: the main job, end to end.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PAYCHAOS := $(VENV)/bin/paychaos
PYTEST_ARGS ?=

.PHONY: all venv lock install browser cluster test unit demo bench clean

all: test

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Resolve pyproject.toml's ranges afresh in a throw-away venv and pin what came out.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	{ sed -n '1,2p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

install: venv
	$(PAYCHAOS) stack install

# The HTML report's test renders it in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || { echo "installing chromium (apt) for the report's browser test"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }; }

# The Kubernetes test cluster's binaries, built from the Go module proxy: 10–20 minutes cold on two
# cores, nothing when warm (they are cached under ~/.cache/paychaos). Needs Go 1.26+.
cluster: venv
	$(PAYCHAOS) cluster install

# pytest exits 5 when it collected nothing: make treats any non-zero exit as a failure.
test: install browser cluster
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: install
	$(PAYCHAOS) demo

bench: install
	$(PY) benchmarks/run_all.py

clean:
	-$(PAYCHAOS) stack down
	rm -rf $(VENV) .paychaos out
