# caseline developer commands.  Every target builds .venv itself when missing,
# so on a fresh machine (Python 3.11, pip, gcc) one command does everything.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test run lint typecheck bench vectors clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# mypy cannot follow setuptools' editable-install finder, so it gets a tree of
# symlinks that mirrors the installed ``caseline`` namespace.
.mypy-path/caseline:
	mkdir -p .mypy-path/caseline
	for d in schemas crypto server client; do ln -sfn ../../$$d .mypy-path/caseline/$$d; done

test: lint
	$(BIN)/python -m pytest -q

run:
	@echo "The broker (issue 3) is not built yet; the protocol core is tested by 'make test'." >&2
	@exit 2

lint: $(STAMP) .mypy-path/caseline
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p caseline.schemas -p caseline.crypto -p caseline.server
	$(BIN)/mypy tests bench

typecheck: lint

bench: $(STAMP)
	$(BIN)/python -m bench.core

vectors: $(STAMP)
	$(BIN)/python -m tests.vectors.generate

clean:
	rm -rf $(VENV) .mypy-path .pytest_cache .mypy_cache .ruff_cache .hypothesis
