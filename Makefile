# Two commands on a fresh machine: `make test` and `make demo`. Both create .venv and install the lock first.
PYTHON ?= python3
VENV := .venv
# The machine's local wheels: torch's CPU build lies there (the index only has multi-GB CUDA builds).
WHEELS ?= /opt/wheels
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install system-deps bench-deps test test-fast lint demo bench clean lock

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode --find-links $(WHEELS) -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Orthanc + its DICOMweb plugin: the real PACS that tests/ingest/test_dicomweb.py starts on its own ports. Chromium +
# its driver: the headless browser tests/review/test_browser.py drives through the review page. Installing them
# needs root; without root the PACS and browser tests are skipped (and say so), the rest of the suite runs.
# Nothing is installed when all three binaries are there; any one missing installs the four packages (apt-get
# leaves those already installed as they are).
# A policy-rc.d that says no (101) keeps Debian from starting the system Orthanc service while installing.
system-deps:
	{ command -v Orthanc && command -v chromium && command -v chromedriver; } >/dev/null || [ "$$(id -u)" != 0 ] || { \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && \
			trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
		fi; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			orthanc orthanc-dicomweb chromium chromium-driver; \
	}

test: install system-deps
	$(BIN)/pytest -q --durations=15

# The suite without the end-to-end tests marked slow (subprocess CLI, Airflow, Orthanc, torchrun, the whole
# shared archive): under 3 minutes, for a developer between edits. make test runs everything.
test-fast: install
	$(BIN)/pytest -q -m "not slow" --durations=10

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: install
	mkdir -p demo-out
	$(BIN)/medssl run --config configs/pipeline.yaml
	$(BIN)/medssl score --config configs/pipeline.yaml
	@echo "Results table:  demo-out/scores.csv (each series scored by models:/medssl-detector@champion)"
	@echo "Label curve:    demo-out/curve/label-efficiency.png"
	@echo "Evaluation:     demo-out/evaluate/metrics.json, roc.png"
	@echo "MLflow:         $(BIN)/mlflow ui --backend-store-uri sqlite:///demo-out/mlflow.db"

# Every benchmark table of benchmarks/RESULTS.md, each under its command there (hours on 2 CPU cores; a
# finished cell is kept under benchmarks/work/, so a stopped run goes on). The label-saving table is the
# four finetune_curves.py runs and label_saving.py's summary of them.
# pigz: dcm2niix pipes its -z y output through pigz when it is on PATH; the ingest benchmark compares medssl
# with dcm2niix both with and without it. Only the benchmarks need it (root installs it, as system-deps does).
bench-deps:
	command -v pigz >/dev/null || [ "$$(id -u)" != 0 ] || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pigz; \
	}

bench: install bench-deps
	$(BIN)/python benchmarks/ingest_bench.py
	$(BIN)/python benchmarks/ingest_profile.py --write-results
	$(BIN)/python benchmarks/pretrain_datapath.py
	$(BIN)/python benchmarks/pretrain_knn.py --epochs simclr=80,moco=80,dino=80
	$(BIN)/python benchmarks/suggest_vs_random.py --encoder benchmarks/work/pneumoniamnist/pretrain/moco-epochs80/encoder.pt
	for set in pneumoniamnist busi cxr_nih1000 brain-mr; do \
		$(BIN)/python benchmarks/finetune_curves.py --dataset $$set --pretrain site --threads 1 --write-results || exit 1; \
	done
	$(BIN)/python benchmarks/label_saving.py --write-results
	for set in cxr_nih1000 busi brain-mr; do \
		$(BIN)/python benchmarks/view_presets.py --dataset $$set --write-results || exit 1; \
	done
	$(BIN)/python benchmarks/adapt_views.py --write-results
	$(BIN)/python benchmarks/adapt_sites.py --budget 10%,100%
	$(BIN)/python benchmarks/adapt_shift.py --budget 10%,100%
	rm -rf benchmarks/work/adapt-cli && $(BIN)/python benchmarks/adapt_cli.py

lock:
	$(BIN)/uv pip compile pyproject.toml --extra bench --extra airflow --extra dev --find-links $(WHEELS) -o requirements.lock \
		--python $(BIN)/python

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
