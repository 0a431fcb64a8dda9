# The README's commands. Each target sets up what it needs first (a local .venv, an editable
# install with the dev extra, the python3 Jupyter kernel), so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TINY_RUNS := runs/tiny

.PHONY: setup notebooks test test-unit lab clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (pruning)" > /dev/null
	touch $(STAMP)

## the main job: every numbered notebook in order, headless, quick profile; executed copies in runs/
notebooks: setup
	$(PY) -m pruning_utils.notebooks --profile quick

## unit tests and every notebook under papermill with tiny parameters (executed copies in runs/tiny/), then nbval
## over those copies: each runs again top to bottom in a fresh kernel, its checked outputs compared
test: setup
	rm -rf $(TINY_RUNS)
	$(PY) -m pytest
	TQDM_DISABLE=1 $(PY) -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg $(TINY_RUNS)

## the unit tests alone (no notebook runs; minutes): the tier pytest -m "not notebooks" selects
test-unit: setup
	$(PY) -m pytest -m "not notebooks"

## JupyterLab on the notebooks
lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-runs:
	rm -rf runs figures/quick
