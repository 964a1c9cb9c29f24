# optirep: every target installs what it needs. `make test` is what CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extra index for torch on machines without the local CPU wheel, e.g.
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_INDEX_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export DVC_NO_ANALYTICS ?= 1
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0
CORES ?= all

.PHONY: setup test smoke study paper lint bench lock tex tex-optional slurm-test clean help

help:
	@echo "make setup   build .venv from envs/requirements.lock (CPU torch + torchvision repair)"
	@echo "make test    setup + pytest (optimizers, data, training, workflow smoke DAG)"
	@echo "make smoke   run the smoke study end to end, to paper/ms.pdf"
	@echo "make study   the full study: snakemake --cores all (GPU recommended)"
	@echo "make bench   optimizer step-time/memory benchmark (reported, not asserted)"
	@echo "make slurm-test  the Slurm path on a one-node cluster on localhost (root + apt; not in make test)"

setup: $(VENV)/.optirep-setup

$(VENV)/.optirep-setup: envs/requirements.lock pyproject.toml scripts/fix_torchvision_cpu.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check $(PIP_INDEX_ARGS) -r envs/requirements.lock
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	PYTHON=$(PY) bash scripts/fix_torchvision_cpu.sh
	touch $@

test: setup tex-optional
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q $(PYTEST_ARGS)

TEX_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-fonts-recommended texlive-latex-extra latexmk

tex:
	@command -v latexmk >/dev/null && command -v pdflatex >/dev/null || { \
	  echo "installing a minimal TeX Live (apt-get, --no-install-recommends)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(TEX_PACKAGES) >/dev/null; }

# best effort for the tests: without TeX the smoke DAG test stops before the PDF (latex=False)
tex-optional:
	@$(MAKE) --no-print-directory tex || echo "warning: TeX Live not installed; the smoke test skips the PDF step"

smoke: setup tex
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores 2 --configfile experiments/workflow-smoke.yaml

study: setup tex
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

# Installs Slurm with apt when missing, starts munged/slurmctld/slurmd on localhost (stopped at the
# end), runs a small DAG through a site copy of profiles/slurm. Minutes: not part of `make test`.
slurm-test: setup
	VENV=$(CURDIR)/$(VENV) bash scripts/slurm_local.sh

# the optimizers with a target (issue #12) and torch's rows, on ResNet-18 and the GPT-2 block stack
BENCH_ARGS ?= --shapes all --optimizers biostatis_v6 biostatis_v6_global neuroplastic enhanced_sgd enhanced_sgd_noclosure
bench: setup
	$(PY) benchmarks/optim_step.py $(BENCH_ARGS)

lint: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --lint

lock:
	rm -rf /tmp/optirep-lock-venv && $(PYTHON) -m venv /tmp/optirep-lock-venv
	/tmp/optirep-lock-venv/bin/pip install -q $(PIP_INDEX_ARGS) -r envs/requirements.in
	{ head -n 3 envs/requirements.lock; /tmp/optirep-lock-venv/bin/pip freeze | grep -v '^-e' | sed -E 's/^(torch==[0-9.]+)\+cpu$$/\1/'; } > envs/requirements.lock.new
	mv envs/requirements.lock.new envs/requirements.lock

clean:
	rm -rf $(VENV) .snakemake .pytest_cache
