# The two commands of the README: `make demo` (the main job) and `make test`.
# Both install into .venv in this checkout first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONSTRAINTS := requirements/constraints.txt

.PHONY: install test lint format demo bench clean

# warmup compiles the numba kernels into numba's cache now, so the first segmentation does not
# (it returns at once when this checkout's kernels are already compiled).
install: $(STAMP)
	$(PY) -m segresmamba warmup

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) torch==2.13.0
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test,train]"
	touch $(STAMP)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint
	$(PY) -m pytest Testing

demo: install
	$(VENV)/bin/segresmamba demo --out demo-output

bench: install
	$(VENV)/bin/segresmamba bench

clean:
	rm -rf $(VENV) build *.egg-info
