# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN    ?= runs/quick
PRESET ?= quick
# Every pip call uses the constraints file: an unpinned torch would pull a multi-GB CUDA build.
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test test-accuracy venv data lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PIP) -e '.[onnx,serve,tune,audit,dev]'
	touch $@

data: venv
	$(BIN)/fmnist data fetch

run: venv data
	$(BIN)/fmnist train --preset $(PRESET) --out $(RUN) --overwrite --plain
	$(BIN)/fmnist evaluate $(RUN)
	$(BIN)/fmnist predict $(RUN) --index 0
	$(BIN)/fmnist report $(RUN)

test: venv
	$(BIN)/python -m pytest -q

# The presets' accuracy promises on the real data: minutes per preset on 2 CPU cores.
test-accuracy: venv
	$(BIN)/python -m pytest -q -m accuracy

lint: venv
	$(BIN)/ruff check fmnist tests benchmarks
	$(BIN)/ruff format --check fmnist tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
