# livar-bench developer and reproduction targets. `make help` lists them.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip
OUT ?= results
DATA_ROOT ?= $(HOME)/data

.PHONY: help install demo test test-all test-flower test-gpu bench-gpu quality reproduce-table clean-demo

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## install the package with test tools (torch comes from the local wheel copy when present)
	$(PIP) install -e '.[dev]'

demo: install  ## install, then run the offline demo pipeline on digits (a few minutes on 2 CPU cores)
	$(PYTHON) -m livar_bench demo --out $(OUT)/demo

test:  ## fast CPU test suite
	$(PYTHON) -m pytest -q --durations=15

test-all:  ## CPU suite plus slow tests
	$(PYTHON) -m pytest -q -m "not gpu"

test-flower:  ## the Flower engine end to end (slow; needs pip install -e '.[flower]')
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -m slow tests/flower/test_flower_engine.py

test-gpu:  ## tests that need CUDA
	$(PYTHON) -m pytest -q -m gpu

bench-gpu:  ## GPU figures for the README: ViT-B/16 bench (optimised, packed, reference-style) as JSON, then gpu tests
	mkdir -p $(OUT)/bench
	livar-bench bench --backbone vit_base_patch16_224 --clients 10 --batch-size 16 --samples-per-client 64 \
		--device cuda --repeats 3 --pack 10 --json > $(OUT)/bench/vit_b16_cuda.json
	$(PYTHON) -m pytest -q -m gpu

quality:  ## lint
	$(PYTHON) -m ruff check livar_bench tests

reproduce-table:  ## the paper's protocol sweep, then table, plots and comparison (needs DATA_ROOT and weights)
	@echo "datasets are read from DATA_ROOT=$(DATA_ROOT) (override: make reproduce-table DATA_ROOT=/path/to/data)"
	livar-bench sweep --config livar_bench/configs/paper.yaml --data-root $(DATA_ROOT) --out $(OUT)
	livar-bench table --out $(OUT) --format latex
	livar-bench table --out $(OUT) --format csv
	livar-bench table --out $(OUT) --format markdown
	livar-bench plot --out $(OUT)
	livar-bench compare --out $(OUT)
	livar-bench sweep --config livar_bench/configs/ablation.yaml --data-root $(DATA_ROOT) --out $(OUT)/ablation
	livar-bench ablation --out $(OUT)/ablation --format latex
