# itsacat: `make run` runs the pipeline, `make test` runs the tests. Both set themselves up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export PATH := $(abspath $(VENV))/bin:$(PATH)
EXTRAS ?= dev

.PHONY: run test setup lint typecheck bench clean deploy stop

# One stamp per set of extras (`base`: none), so each target installs what it needs.
$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.$(if $(filter base,$*),,[$*])'
	touch $@

setup: $(VENV)/.installed-$(EXTRAS)

# the pipeline needs only the base packages (a minute less to set up than the test tools)
run: $(VENV)/.installed-base  ## pull the data, run the pipeline, show the metrics
	dvc pull --quiet data.dvc
	dvc repro
	dvc metrics show

deploy: setup  ## serve the model `make run` trained on the local endpoint (blue/green)
	itsacat deploy --target local
	itsacat endpoint status

stop: setup  ## stop the local endpoint
	itsacat endpoint stop

test: $(VENV)/.installed-dev  ## the whole test suite
	bash tests/system-deps.sh chromium chromium-driver
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(VENV)/.installed-dev,bench
	$(PY) bench/train_speed.py
	bash tests/system-deps.sh wrk
	$(PY) bench/serve_load.py
	$(PY) bench/lambda_cold.py

clean:
	rm -rf $(VENV) prepared model insight eval dvclive metrics.json
