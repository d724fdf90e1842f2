# Two commands on a fresh machine: `make test` and `make demo`. Both create .venv and install the lock first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install test lint demo bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: install
	mkdir -p demo-out
	$(BIN)/medssl ingest --config configs/demo.yaml
	@echo "Manifest: demo-out/manifest.parquet"
	@echo "MLflow:   $(BIN)/mlflow ui --backend-store-uri sqlite:///demo-out/mlflow.db"

bench: install
	$(BIN)/python benchmarks/ingest_bench.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
