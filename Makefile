# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
# Both build .venv from nothing: the CPU build of torch first, so that pip never pulls a
# multi-GB CUDA build, then the project with its dev extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test zoo digits objects clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/rrr run examples/ring_bar.rrr --out rrr-out --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

# retrain the shipped 2D zoo (rrrdsl/zoo/toy2d/checkpoints/) from the exact oracles, ~85 min on one core
zoo: $(STAMP)
	$(BIN)/rrr train toy2d --zoo --into-package --threads 1

# retrain the digits backbone, guidance classifier and evaluator (rrrdsl/zoo/digits/checkpoints/; a few minutes on one core)
digits: $(STAMP)
	$(BIN)/rrr train digits --into-package --threads 1

# retrain the objects UNets, energy (4000 steps) and score twin (2000) into rrrdsl/zoo/objects/checkpoints/; about 40 min on one thread of a shared 2-core machine
objects: $(STAMP)
	$(BIN)/rrr train objects --into-package --threads 1

clean:
	rm -rf $(VENV) rrr-out
