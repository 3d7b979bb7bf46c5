# Every target does its own set-up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed
QUICK ?= --quick

.PHONY: install demo test lint unit notebooks wheel bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m bayeskit.inference tour --out reports
	@echo "open reports/index.html"

lint: $(STAMP)
	$(PY) -m ruff check inference models graphs tests benchmarks
	$(PY) -m ruff format --check inference models graphs tests benchmarks

unit: $(STAMP)
	$(PY) -m pytest -q tests

notebooks: $(STAMP)
	BAYESKIT_NOTEBOOK_QUICK=1 $(PY) -m pytest -q --nbmake --nbmake-timeout=900 notebooks

wheel: $(STAMP)
	bash .ci/wheel_check.sh $(PY)

test: lint unit notebooks wheel

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) reports build dist *.egg-info .pytest_cache
