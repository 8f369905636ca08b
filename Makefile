# Single entry point.  `make test` and `make repro` create .venv when missing and install the
# pinned environment (re-installing only when pyproject.toml changes).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
# DVC stage commands call `python`: make it the project's.
export PATH := $(abspath $(VENV))/bin:$(PATH)
# glibc malloc thresholds: measured 1.3-1.8x faster torch training steps on these machines.
export MALLOC_MMAP_THRESHOLD_ := 1000000000
export MALLOC_TRIM_THRESHOLD_ := 1000000000

.PHONY: setup test test-avx2 repro lab bench clean-scratch

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import mtlrepro, torch, torchvision, papermill, dvc"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mtlrepro)" > /dev/null
	@touch $(STAMP)

test: setup
	$(VENV)/bin/ruff check mtlrepro tests data_scripts
	$(PY) -m pytest -q

# The training, oneDNN and notebook tests again with oneDNN capped at its AVX2 kernels, which
# AVX2-only CPUs (e.g. AMD EPYC) run: on an AVX-512 machine they would otherwise go untested.
AVX2_TESTS := tests/test_onednn.py tests/test_train.py tests/test_train_seams.py \
	tests/test_architectures.py tests/test_baselines.py tests/test_runs.py \
	tests/test_experiments_distinctiveness.py tests/test_experiments_group_sparsity.py \
	tests/test_overparam.py tests/test_experiments_overparam.py tests/test_dag.py \
	tests/test_experiments_dag.py tests/test_partition_net.py tests/test_experiments_partition.py \
	tests/test_inference.py tests/test_pointwise_fusion.py tests/test_notebooks.py
test-avx2: setup
	ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q $(AVX2_TESTS)

repro: setup
	$(VENV)/bin/dvc repro

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: setup
	$(PY) -m mtlrepro.bench --out results/benchmarks

clean-scratch:
	rm -rf .scratch
