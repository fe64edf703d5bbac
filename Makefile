# Two commands set everything up: `make demo` and `make test` (see README.md).
# Each creates its virtualenv when missing and installs what it needs first.

PYTHON ?= python3
VENV := .venv
VENV_LATEST := .venv-latest
PYTEST_ARGS ?=
DATA_DIR := /usr/share/datasets/fashion-mnist

.PHONY: test test-fast test-latest demo lint bench bench-quick bench-convnet bench-convnet-quick bench-residual bench-sequences bench-sequences-quick data build-file clean

# TensorFlow 2.15.1 (primary target: tf.estimator and Keras 2 still exist).
$(VENV)/.installed: setup.py constraints/tf2.15.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c constraints/tf2.15.txt -e '.[tests,examples]'
	@touch $@

# The newest TensorFlow (no tf.estimator: those tests skip with a reason).
$(VENV_LATEST)/.installed: setup.py constraints/tf-latest.txt
	@test -x $(VENV_LATEST)/bin/python || $(PYTHON) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/python -m pip install -q --upgrade pip
	$(VENV_LATEST)/bin/python -m pip install -q -c constraints/tf-latest.txt -e '.[tests,examples]'
	@touch $@

# Fashion-MNIST from Debian, when we may install it; the tests fall back to
# generated data when it is absent, so a failure here is only a warning.
data:
	@if [ ! -d $(DATA_DIR) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
	    echo "warning: could not install dataset-fashion-mnist; using generated data"; \
	  else \
	    echo "note: $(DATA_DIR) missing (apt-get install dataset-fashion-mnist); using generated data"; \
	  fi; \
	fi

test: $(VENV)/.installed data
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-latest: $(VENV_LATEST)/.installed data
	$(VENV_LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# The main job: K-FAC, SGD with momentum and Adam on the deep autoencoder
# (short version); prints the time-to-target table.
demo: $(VENV)/.installed data
	$(VENV)/bin/python -m kfac.examples.autoencoder_mnist --quick

bench: $(VENV)/.installed data
	$(VENV)/bin/python -m bench.autoencoder

bench-quick: $(VENV)/.installed data
	$(VENV)/bin/python -m bench.autoencoder --quick

bench-convnet: $(VENV)/.installed data
	$(VENV)/bin/python -m bench.convnet

bench-convnet-quick: $(VENV)/.installed data
	$(VENV)/bin/python -m bench.convnet --quick

# The residual convnet's grid, test metrics at 30 s and 60 s (~22 min).
bench-residual: $(VENV)/.installed data
	$(VENV)/bin/python -m bench.convnet --architecture=residual --budgets=30,60 --max_seconds=60

# KFAC-expand vs KFAC-reduce (and Adam, SGD) on the RNN example, full and
# padded sequences (#17).
bench-sequences: $(VENV)/.installed data
	$(VENV)/bin/python -m bench.sequences

bench-sequences-quick: $(VENV)/.installed data
	$(VENV)/bin/python -m bench.sequences --quick

lint: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q ruff
	$(VENV)/bin/python -m ruff check kfac tests bench tools

# Regenerates BUILD from the files in the tree (tests/test_build_file.py
# fails when BUILD and the tree disagree).
build-file: $(VENV)/.installed
	$(VENV)/bin/python tools/gen_build.py > BUILD

clean:
	rm -rf $(VENV) $(VENV_LATEST) *.egg-info .pytest_cache
