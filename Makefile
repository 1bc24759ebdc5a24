# caseline developer commands.  Every target builds .venv itself when missing,
# so on a fresh machine (Python 3.11, pip, gcc) one command does everything.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test run demo demo-fork lint typecheck bench bench-load bench-attachments bench-workflow abuse vectors interop clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# mypy cannot follow setuptools' editable-install finder, so it gets a tree of
# symlinks that mirrors the installed ``caseline`` namespace.
.mypy-path/caseline: Makefile
	mkdir -p .mypy-path/caseline
	for d in schemas crypto server client witness; do ln -sfn ../../$$d .mypy-path/caseline/$$d; done
	touch .mypy-path/caseline

# Two workers, one a core: the suite's brokers and CLI processes wait on each other far more
# than they compute, and a test never shares a server, a port or a file with another.
test: lint
	$(BIN)/python -m pytest -q -n 2

# make run HOST=0.0.0.0 PORT=18020 DATA=/srv/caseline: only what is given on the command line
# counts for HOST and PORT (a shell's own $HOST, its host name, must not move the broker).
DATA ?= .caseline-server
HOST := $(if $(filter command line,$(origin HOST)),$(HOST),127.0.0.1)
PORT := $(if $(filter command line,$(origin PORT)),$(PORT),8443)

run: $(STAMP)
	@test -f $(DATA)/server.key || $(BIN)/caseline-server --data-dir $(DATA) init
	@echo
	@echo "Next: register each partner agency's root key (checked with them by phone):"
	@echo "  $(BIN)/caseline-server --data-dir $(DATA) agency add ke-kra --name 'Kenya Revenue Authority' --country KE --root-key HEX"
	@echo "Devices then enrol against http://$(HOST):$(PORT) ; Ctrl-C stops the broker."
	@echo
	$(BIN)/caseline-server --data-dir $(DATA) serve --host $(HOST) --port $(PORT)

# A guided tour: a broker, two agencies, a bot and a case, on loopback; leaves nothing running.
demo: $(STAMP)
	$(BIN)/python -m caseline.client.demo

# The attack the witnesses are for: a second broker on a copy of the data, the same key,
# one officer on each copy; both officers' next commands raise the split-view alarm.
demo-fork: $(STAMP)
	$(BIN)/python -m caseline.client.demo --fork

lint: $(STAMP) .mypy-path/caseline
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p caseline.schemas -p caseline.crypto -p caseline.server -p caseline.client -p caseline.witness
	$(BIN)/mypy tests bench fuzz
	$(BIN)/bandit -q -c pyproject.toml -r schemas crypto server client witness

typecheck: lint

# caseline side by side with Mosquitto and Synapse, which the bench installs itself into
# bench/.peers/ (apt for Mosquitto when root; a venv for Synapse) and stops by PID.  Results:
# bench/results/{core,compare}.json, summary.md, *.png, and the table in README.md.
# BENCH_ARGS: e.g. --repeats 1, --skip synapse, --no-readme; --profile py-spies any missed target.
BENCH_ARGS ?= --profile

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.core
	$(BIN)/python -m bench.coldstart
	$(BIN)/python -m bench.compare $(BENCH_ARGS)
	$(BIN)/python -m bench.witnessed
	$(BIN)/python -m bench.attachments $(ATTACHMENTS_ARGS)
	$(BIN)/python -m bench.workflow $(WORKFLOW_ARGS)

# Issue 16: `caseline due` and `caseline stats` over a profile whose request index holds
# 1,000 cases x 100 requests (bench/results/workflow.json and README's table).
# WORKFLOW_ARGS: e.g. --cases 50 --seconds 1 --no-readme for a smoke run.
WORKFLOW_ARGS ?=
bench-workflow: $(STAMP)
	$(BIN)/python -m bench.workflow $(WORKFLOW_ARGS)

# Issue 15: a 1 GiB attachment each way through a real broker (MB/s, client and broker RSS),
# kill -9 of the client and of the broker mid-upload, and 200 KiB photos at 50 posts/s
# (bench/results/attachments.json and README's table).  ATTACHMENTS_ARGS: e.g. --size 4GiB
# --only throughput (offsets past 4 GiB), or --size 32MiB --seconds 2 for a smoke run.
ATTACHMENTS_ARGS ?=
bench-attachments: $(STAMP)
	$(BIN)/python -m bench.attachments $(ATTACHMENTS_ARGS)

# The broker alone (bench/results/load.json), then the witnessed log: the broker with two
# caseline-witness processes at 1,000 updates/s, and one witness's cosignatures/s
# (bench/results/witnessed.json).
bench-load: $(STAMP)
	$(BIN)/python -m bench.load
	$(BIN)/python -m bench.witnessed

# Issue 14: each flood against a real broker, the honest device's p50/p99 with and without it (ABUSE_ARGS=--seconds 2 for a smoke run).
ABUSE_ARGS ?=
abuse: $(STAMP)
	$(BIN)/python -m bench.abuse $(ABUSE_ARGS)

vectors: $(STAMP)
	$(BIN)/python -m tests.vectors.generate

# caseline's checkpoints cosigned by litewitness (C2SP tlog-witness, filippo.io/torchwood):
# builds it into ~/.cache/caseline-interop when missing (Go and the Go module proxy), or
# takes CASELINE_LITEWITNESS=/path/to/litewitness; not part of make test.
interop: $(STAMP)
	PYTHON=$(BIN)/python bash bench/interop.sh

# Coverage-guided fuzzing (atheris), one harness after another: FUZZ_SECONDS each.
# Seeds come from a real case (fuzz/seeds.py); new inputs stay in fuzz/corpus/,
# and an input that makes anything but a CaselineError escape lands in fuzz/findings/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= codec certs commits envelopes content

.PHONY: fuzz audit chaos

# Fault injection: kill -9 the broker CHAOS_KILLS times under load (plus a backup
# under load and a full disk), then check that nothing acknowledged was lost.
CHAOS_KILLS ?= 25
CHAOS_ARGS ?=

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --kills $(CHAOS_KILLS) $(CHAOS_ARGS)

fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[fuzz]'
	$(BIN)/python -m fuzz.seeds fuzz/corpus
	mkdir -p fuzz/findings
	for t in $(FUZZ_TARGETS); do \
	  $(BIN)/python -m fuzz.fuzz_$$t fuzz/corpus/$$t -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
	    -artifact_prefix=fuzz/findings/$$t- || exit 1; \
	done

# Supply chain: known vulnerabilities in the installed dependencies (bandit runs in
# make lint).  --strict: a dependency pip-audit could not look up fails the audit
# instead of counting as clean.
audit: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[audit]'
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off

clean:
	rm -rf $(VENV) .mypy-path .pytest_cache .mypy_cache .ruff_cache .hypothesis fuzz/corpus
