# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN    ?= runs/default
# make run trains for a time, not a number of epochs: the same few minutes on every machine, the
# recipe chosen for what this machine can do in it (README, "What make run buys").
BUDGET ?= 2m
TRAIN  ?= --time-budget $(BUDGET)
# Every pip call uses the constraints file: an unpinned torch would pull a multi-GB CUDA build.
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test test-accuracy notebook venv keras-venv data lint bench clean pretrained pretrained-check

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PIP) -e '.[onnx,serve,tune,audit,track,dev,notebook]'
	touch $@

data: venv
	$(BIN)/fmnist data fetch

run: venv data
	$(BIN)/fmnist train $(TRAIN) --out $(RUN) --overwrite --plain
	$(BIN)/fmnist evaluate $(RUN)
	$(BIN)/fmnist predict $(RUN) --index 0
	$(BIN)/fmnist report $(RUN)

test: venv
	$(BIN)/python -m pytest -q

# The presets' accuracy promises on the real data: minutes per preset on 2 CPU cores.
test-accuracy: venv
	$(BIN)/python -m pytest -q -m accuracy

# Re-runs notebooks/fashion_mnist.ipynb top to bottom in this venv's kernel and stores the outputs
# in place (nbclient, no browser); a cell error stops it and leaves the file as it was.
notebook: venv data
	$(BIN)/jupyter-execute --inplace --timeout=900 notebooks/fashion_mnist.ipynb

# The model inside the package (fmnist/pretrained/): the quick preset, seed 0, 2 threads, trained by
# fmnist itself, evaluated, checked against a test-accuracy floor and installed with its card.
# pretrained-check trains it again and compares: the same tensor hash on the same CPU kind.
pretrained: venv data
	$(BIN)/python scripts/pretrained.py

pretrained-check: venv data
	$(BIN)/python scripts/pretrained.py --check

# The Keras notebook baseline for benchmarks/time_to_accuracy.py, in a virtual environment of its
# own: fmnist does not depend on TensorFlow, and its CPU wheel is large (~250 MB).
keras-venv: .venv-keras/.installed

.venv-keras/.installed:
	test -x .venv-keras/bin/python || $(PYTHON) -m venv .venv-keras
	.venv-keras/bin/python -m pip install --quiet --disable-pip-version-check 'tensorflow-cpu>=2.16' numpy
	touch $@

lint: venv
	$(BIN)/ruff check fmnist tests benchmarks notebooks
	$(BIN)/ruff format --check fmnist tests benchmarks notebooks

clean:
	rm -rf $(VENV) .venv-keras build *.egg-info .pytest_cache .ruff_cache
