# One way to set up, test and run Passerelle. Every target creates the virtualenv on demand,
# so a fresh clone needs nothing installed by hand (python3 and its venv module only).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE   := node_modules/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --only-binary=:all: -e '.[dev]'
	touch $(STAMP)

## demo: two real local chains, messages relayed both ways and a token round trip, status shown
demo: $(STAMP) $(NODE)
	$(BIN)/python -m devnet.demo

# anvil (EVM devnet) and solcjs come from the npm registry, pinned by package-lock.json.
$(NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE)

## test: the whole suite (unit, property, vectors, CLI) plus ruff and mypy
test: $(STAMP) $(NODE)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## bench: every benchmark, each next to a baseline measured in the same run
bench: $(STAMP) $(NODE)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
