# One way to set up, test and run Passerelle. Every target creates the virtualenv on demand,
# so a fresh clone needs nothing installed by hand (python3 and its venv module only).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE   := node_modules/.installed
POS    := devnet/npm-pos/node_modules/.installed
# Test workers: three on CI's two cores. The suite is mostly CPU-bound, but the proof-of-stake
# module waits on 2-second slots for four minutes and the end-to-end tests on 1-second blocks; a
# third worker fills that time (measured on a fresh clone: 537 s of pytest with 3, 627 s with 2).
WORKERS ?= 3

.PHONY: demo test test-fast lint bench clean pos-tools

# Installed with uv when it can be had: the same packages from the same places as pip
# (.ci/uv-args hands it pip's configuration), in ~8 s instead of ~47 s on a fresh clone — the
# step every test and the demo wait for. Should uv not install or not resolve, pip does, as
# before (one line says so).
# --compile-bytecode: what pip does after an install (uv does not by default). Without it, where
# PYTHONDONTWRITEBYTECODE is set (as where CI runs) every Python process compiles web3,
# SQLAlchemy, substrate-interface... from source at each start: 4.2 CPU s instead of 1.5 to
# import a relayer, in every process the tests start (relayers, attesters, the CLI).
# Compiling the 3,700 files at install costs ~6 CPU s (+3 s of wall).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if $(BIN)/pip install --quiet --disable-pip-version-check --only-binary=:all: uv==0.13.10 \
	    && args=$$($(BIN)/python .ci/uv-args) \
	    && $(BIN)/uv pip install --quiet --python $(BIN)/python --only-binary :all: --compile-bytecode $$args -e '.[dev]'; \
	then :; else echo "uv could not install the virtualenv; pip does"; \
	  $(BIN)/pip install --quiet --disable-pip-version-check --only-binary=:all: -e '.[dev]'; fi
	touch $(STAMP)

## demo: two real local chains, messages relayed both ways and a token round trip, status shown
demo: $(STAMP) $(NODE)
	$(BIN)/python -m devnet.demo

# anvil, chopsticks and solcjs come from the npm registry, pinned by package-lock.json.
# --ignore-scripts: anvil's binary comes as an optional dependency, and chopsticks does not use
# the sqlite3 module whose install script would compile it from source (minutes, needs g++).
$(NODE): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(NODE)

## pos-tools: Lodestar and the EthereumJS client for `passerelle devnet up --pos` (devnet/npm-pos/)
# A separate npm project: Lodestar 1.5.1 needs `overrides` (docs/pos-devnet.md) and native code
# (g++ and make), which the root project's --ignore-scripts install must not pay for `make demo`.
# Only the native code the devnet needs is built: `npm ci --ignore-scripts`, then the install
# scripts of three addons (`npm rebuild`, --ignore-scripts=false so that a user's npmrc cannot
# turn it into a no-op):
# - @chainsafe/blst: Lodestar's CLI imports it at start. Its script keeps the shipped prebuild
#   when that loads (linux-x64 ships Node ABIs 72, 93, 102, 108, 115 and 127 only: Node 18, 20,
#   22) and otherwise downloads or compiles one; skipped, Lodestar dies on Node 24 or 26.
# - snappy: Lodestar does not start without it.
# - bigint-buffer: its pure-JS fallback mis-reads a Uint8Array in toBigIntBE, and its script
#   swallows a failed compile.
# Then one `node -e` LOADS each of them (POS_LOADS), as Lodestar will: a file that is there but
# does not load (a prebuild for another Node, another glibc) fails here, not at `devnet up`.
# On failure it prints the command that shows the scripts' output (npm hides it).
# Found in /proc/PID/maps of the running nodes: classic-level and crc32 load prebuilds shipped
# in their packages (N-API, no script needed); bcrypto runs on its JS backend (NODE_BACKEND=js,
# set by devnet/pos.py; this node uses it at start-up only); gc-stats is optional (GC metrics,
# off); c-kzg (EIP-4844) is never loaded. Measured (CPU s, one core): 70 with every install
# script, 44 this way (bcrypto alone was 26; blst's check ~1.4). `make test` runs this beside
# pytest (below), so every CPU second of it is taken from the tests' two cores.
# Without this make's job flags: under `make -j` they would reach node-gyp's own make.
POS_NATIVE := @chainsafe/blst snappy bigint-buffer
POS_LOADS  := require("@chainsafe/blst"); require("snappy"); require("./node_modules/bigint-buffer/build/Release/bigint_buffer.node")
POS_WHY    := cd devnet/npm-pos && npm rebuild $(POS_NATIVE) --ignore-scripts=false --foreground-scripts

pos-tools: $(POS)

$(POS): devnet/npm-pos/package.json devnet/npm-pos/package-lock.json
	cd devnet/npm-pos && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	cd devnet/npm-pos && { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL npm rebuild $(POS_NATIVE) --ignore-scripts=false --loglevel=error && node -e '$(POS_LOADS)'; } \
	  || { echo "a native addon of the PoS tools did not build or does not load; to see why: $(POS_WHY)" >&2; exit 1; }
	touch $(POS)

# What the tests need, installed side by side, and the static checks: pip's wheels and the root
# npm project do not wait for each other. `make test` and `make test-fast` do not wait for the
# PoS tools: only tests/test_pos_chain.py runs them, and its fixture waits for the build
# (tests/e2e_support.py: wait_for_pos_tools), failing, never skipping, when it failed. The build
# (~44 CPU s, 1-2 min of wall on a fresh clone beside the tests, the longest part of the setup)
# starts once the rest of the setup is done, and runs while pytest already tests: started
# beside the setup, its npm ci of 1,123 packages took the CPU the virtualenv, the root npm
# project and the first collection were waiting for (session 12: the first test ran 15 s
# later), while the one module that needs it waits without using a core either way. After a
# failed setup it is not started (nothing would run it; the status says 1 and the log why). It
# writes its exit status to POS_STATUS (renamed into place, so never read half-written) and its
# output to POS_LOG. ruff and mypy (~12 s) run beside pytest too, their output kept in LINT_LOG
# and printed at the end. The build and the checks are waited for at the end whatever happened,
# and a failure of either fails the target even when pytest passed.
POS_BUILD   := devnet/npm-pos/build
POS_STATUS  := $(POS_BUILD)/pos-tools.status
POS_LOG     := $(POS_BUILD)/pos-tools.log
LINT_LOG    := $(POS_BUILD)/lint.log
LINT_STATUS := $(POS_BUILD)/lint.status

# pytest rewrites each test module's asserts when it imports it (5,851 asserts: ~8.5 CPU s a
# process) and keeps the result as bytecode beside the source, unless PYTHONDONTWRITEBYTECODE
# is set (as it is where CI runs): then each of the $(WORKERS) workers rewrote every module, on
# every run. So the test run writes bytecode (WRITE_BYTECODE; `make test WRITE_BYTECODE=` keeps
# the environment's choice), and once per virtualenv (COLLECTED: a fresh clone, a new pytest)
# one collection (~14 CPU s) writes it while the root npm project is still installing; the
# workers then load it (a collection of ~5.5 CPU s each instead of ~14; a module changed since
# is rewritten by the workers, as before). Measured on a fresh clone: pytest ran 60 s before
# its first test. Its output is not shown: pytest's own run reports whatever it met.
WRITE_BYTECODE := env -u PYTHONDONTWRITEBYTECODE
COLLECTED      := $(VENV)/.collected

$(COLLECTED): $(STAMP)
	@echo "pytest --collect-only (writes the rewritten test modules' bytecode once)"
	@$(WRITE_BYTECODE) $(BIN)/pytest --collect-only -q -p no:cacheprovider > /dev/null 2>&1 || :
	@touch $(COLLECTED)

define pytest-beside-pos-tools
	@mkdir -p $(POS_BUILD) && rm -f $(POS_STATUS) $(LINT_STATUS); \
	$(MAKE) --no-print-directory -j3 $(STAMP) $(NODE) $(COLLECTED); ready=$$?; \
	if [ "$$ready" = 0 ]; then \
	  echo "make pos-tools > $(POS_LOG) (in the background)"; \
	  ( $(MAKE) --no-print-directory pos-tools > $(POS_LOG) 2>&1; echo $$? > $(POS_STATUS).part; mv $(POS_STATUS).part $(POS_STATUS) ) & \
	  echo "make lint > $(LINT_LOG) (in the background)"; \
	  ( $(MAKE) --no-print-directory lint > $(LINT_LOG) 2>&1; echo $$? > $(LINT_STATUS) ) & \
	  echo "$(BIN)/pytest $(1)"; \
	  PASSERELLE_POS_TOOLS_STATUS="$(CURDIR)/$(POS_STATUS)" $(WRITE_BYTECODE) $(BIN)/pytest $(1); tests=$$?; \
	else tests=$$ready; echo "not built: the set-up before it failed" > $(POS_LOG); echo 1 > $(POS_STATUS); \
	  echo 1 > $(LINT_STATUS); echo "setup failed: lint and tests not run" > $(LINT_LOG); fi; \
	wait; built=$$(cat $(POS_STATUS)); linted=$$(cat $(LINT_STATUS)); \
	echo "--- ruff and mypy ($(LINT_LOG)):"; cat $(LINT_LOG); \
	if [ "$$built" != 0 ]; then echo "make pos-tools failed (exit $$built); the end of $(POS_LOG):"; tail -n 30 $(POS_LOG); fi; \
	if [ "$$tests" != 0 ]; then exit "$$tests"; fi; \
	if [ "$$linted" != 0 ]; then echo "ruff or mypy failed (above)"; exit "$$linted"; fi; [ "$$built" = 0 ]
endef

## test: the whole suite (unit, property, vectors, CLI) plus ruff and mypy; fails when the
## light clients' branch coverage drops below its floor (pyproject.toml, [tool.coverage.report])
# Coverage is taken in the same single pytest run (the suite is not run twice); the report lists
# every line of light_clients/ no test reaches, so an untriggered rejection shows by name.
# --durations=15 lists the slowest tests, so a test that grows slow shows up in CI's log.
# -n $(WORKERS) --dist loadfile: whole modules per worker, so a module's chain fixtures start once;
# --no-loadscope-reorder: in the order tests/conftest.py gives them, the longest first.
test:
	$(call pytest-beside-pos-tools,-q -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 --cov=light_clients --cov-branch --cov-report=term-missing:skip-covered)

## test-fast: everything but the tests marked slow (the multi-process end-to-end runs: SIGKILL
## and restarts, chopsticks), plus ruff and mypy; for the edit-test loop. `make test` is the
## whole suite and what CI runs.
# No coverage floor here: the slow tests are skipped, so the floor would not be a fair measure.
test-fast:
	$(call pytest-beside-pos-tools,-q -n $(WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" --durations=15)

# `ruff format --check`: one layout for every file, so a diff shows only what changed.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: every benchmark, each next to a baseline measured in the same run
bench: $(STAMP) $(NODE)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) node_modules devnet/npm-pos/node_modules $(POS_BUILD) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
