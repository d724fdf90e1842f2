# Two commands on a fresh machine: `make test` and `make demo`. Both create .venv and install the lock first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
DEMO_OUT ?= demo-out

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
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/$(DEMO_OUT)/mlflow.db $(BIN)/medssl ingest data/sample --out $(DEMO_OUT) \
		--labels data/sample/cxr_nih1000/labels.csv
	@echo "Manifest: $(DEMO_OUT)/manifest.parquet   MLflow: $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/$(DEMO_OUT)/mlflow.db"

bench: install
	$(BIN)/python benchmarks/ingest_bench.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
