# selfish-rnn: every target uses the project's virtual environment in .venv.
# `make install` is idempotent; the other targets run it first when needed.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed
SELFISH := $(PYTHON) runner.py
# Where the corpora live: the user's SELFISH_DATA when set; else ../shared/data when it exists (this
# repository's CI); else unset, and the corpora are downloaded into the cache on first use.
ifeq ($(origin SELFISH_DATA),undefined)
ifneq ($(wildcard ../shared/data/penn/train.txt),)
export SELFISH_DATA := $(abspath ../shared/data)
endif
endif

.PHONY: install test test-slow test-browser lint demo bench clean dashboard dashboard-live \
        sweep-density sweep-schedule sweep-cpu \
        lstm-ptb lstm-ptb-dense rhn-ptb rhn-ptb-dense onlstm-ptb onlstm-ptb-dense mos-wt2 mos-wt2-dense \
        onlstm-ptb-1300 baselines-ptb cpu-all cpu-lstm cpu-lstm-dense cpu-lstm-set cpu-lstm-rigl cpu-lstm-snfs \
        cpu-lstm-static cpu-lstm-small-dense cpu-rhn cpu-rhn-dense cpu-onlstm \
        cpu-onlstm-dense cpu-mos cpu-mos-dense

install: $(STAMP)

# The venv sees the system site-packages so that a torch the user already has (a CUDA build, say) is
# used as it is; only when no torch can be imported do we install the CPU wheel 2.13.0.
$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv --system-site-packages $(VENV)
	$(PYTHON) -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(PYTHON) -m pytest -q -m "not slow" tests

test-slow: install
	$(PYTHON) -m pytest -q -m "slow" tests

lint: install
	$(PYTHON) -m ruff check selfish analysis runner.py tests benchmarks

demo: install
	$(SELFISH) train experiments/cpu/demo.yaml

test-browser: install
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PYTHON) -m pytest -q -m browser tests

bench: install
	$(PYTHON) -m benchmarks.run

# --- dashboards -------------------------------------------------------------------------------
SWEEP ?= $(firstword $(wildcard runs/sweeps/*/journal.log))
dashboard: install
	$(SELFISH) report runs --out reports/dashboard
	@echo "open reports/dashboard/report.html"
dashboard-live: install
	$(SELFISH) dashboard-live $(SWEEP)

# --- Optuna sweeps (WORKERS=N to run N local worker processes) ---------------------------------
WORKERS ?= 1
sweep-density: install ; $(SELFISH) sweep sweeps/lstm_density.yaml --workers $(WORKERS)
sweep-schedule: install ; $(SELFISH) sweep sweeps/lstm_death_schedule.yaml --workers $(WORKERS)
sweep-cpu: install
	$(SELFISH) sweep sweeps/cpu_density.yaml --workers $(WORKERS)
	$(SELFISH) sweep sweeps/cpu_death_schedule.yaml --workers $(WORKERS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# --- paper experiments (full scale; a GPU is advised) -------------------------------------------
lstm-ptb: install ; $(SELFISH) train experiments/paper/lstm_ptb.yaml
lstm-ptb-dense: install ; $(SELFISH) train experiments/paper/lstm_ptb_dense.yaml
rhn-ptb: install ; $(SELFISH) train experiments/paper/rhn_ptb.yaml
rhn-ptb-dense: install ; $(SELFISH) train experiments/paper/rhn_ptb_dense.yaml
onlstm-ptb: install ; $(SELFISH) train experiments/paper/onlstm_ptb_1000.yaml
onlstm-ptb-1300: install ; $(SELFISH) train experiments/paper/onlstm_ptb_1300.yaml
onlstm-ptb-dense: install ; $(SELFISH) train experiments/paper/onlstm_ptb_dense.yaml
mos-wt2: install ; $(SELFISH) train experiments/paper/mos_wt2.yaml
mos-wt2-dense: install ; $(SELFISH) train experiments/paper/mos_wt2_dense.yaml
baselines-ptb: install
	for s in set rigl snfs static small_dense; do $(SELFISH) train experiments/paper/lstm_ptb_$$s.yaml || exit 1; done

# --- CPU-scale family (2-layer 200-unit LSTM; each under an hour on 2 cores) ---------------------
cpu-lstm: install ; $(SELFISH) train experiments/cpu/lstm_ptb.yaml
cpu-lstm-dense: install ; $(SELFISH) train experiments/cpu/lstm_ptb_dense.yaml
cpu-lstm-set: install ; $(SELFISH) train experiments/cpu/lstm_ptb_set.yaml
cpu-lstm-rigl: install ; $(SELFISH) train experiments/cpu/lstm_ptb_rigl.yaml
cpu-lstm-snfs: install ; $(SELFISH) train experiments/cpu/lstm_ptb_snfs.yaml
cpu-lstm-static: install ; $(SELFISH) train experiments/cpu/lstm_ptb_static.yaml
cpu-lstm-small-dense: install ; $(SELFISH) train experiments/cpu/lstm_ptb_small_dense.yaml
cpu-rhn: install ; $(SELFISH) train experiments/cpu/rhn_ptb.yaml
cpu-rhn-dense: install ; $(SELFISH) train experiments/cpu/rhn_ptb_dense.yaml
cpu-onlstm: install ; $(SELFISH) train experiments/cpu/onlstm_ptb.yaml
cpu-onlstm-dense: install ; $(SELFISH) train experiments/cpu/onlstm_ptb_dense.yaml
cpu-mos: install ; $(SELFISH) train experiments/cpu/mos_wt2.yaml
cpu-mos-dense: install ; $(SELFISH) train experiments/cpu/mos_wt2_dense.yaml
cpu-all: install
	for s in lstm_ptb_dense lstm_ptb lstm_ptb_set lstm_ptb_rigl lstm_ptb_snfs lstm_ptb_static lstm_ptb_small_dense; do \
	  $(SELFISH) train experiments/cpu/$$s.yaml || exit 1; done
