# kubetune developer entry points. Every target installs what it needs itself
# (idempotent, cached under ~/.cache/kubetune), so a fresh clone can run any.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY = $$(hack/python-env.sh)/bin/python

.PHONY: help demo test test-unit test-trainer test-cluster test-chart test-serving test-stress bench bench-trainer \
        bench-gpu bench-gpu-dpo bench-operator bench-serving bench-sweep crds lint cluster-tools kueue cluster-up cluster-down images images-vllm python-env

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

demo: ## a real model (SmolLM2-135M) tuned end to end: local cluster with a real node, helm install, CPU; SERVE=1 also serves it with vLLM
	SERVE=$(SERVE) bash hack/demo.sh

test: ## install what is missing, then run the whole suite
	bash hack/test.sh

test-unit: ## no cluster, no training
	bash hack/test.sh tests/unit

test-trainer: ## the trainer on tiny models (CPU)
	bash hack/test.sh tests/trainer

test-cluster: ## against the local control plane, MinIO and Prometheus
	bash hack/test.sh tests/cluster

test-chart: ## the Helm chart, dashboards and images
	bash hack/test.sh tests/chart

test-serving: ## vLLM (its CPU build) through the operator and on its own; GGUF export
	bash hack/test.sh tests/cluster/test_serving.py tests/serving tests/trainer/test_export_formats.py

test-stress: ## tests/cluster and tests/trainer RUNS times (default 3) with a CPU hog on one core: each run's time and result
	bash hack/stress-suite.sh $(or $(RUNS),3)

bench: bench-trainer bench-operator ## all CPU benchmarks

bench-trainer: ## ours vs plain TRL: tokens/s, packing efficiency, checkpoint blocking; SmolLM2 rows (BENCH_ONLY=real)
	$(PY) bench/trainer_bench.py

bench-gpu: ## on a GPU machine: 8B-shaped LoRA/QLoRA vs plain TRL
	$(PY) bench/gpu_bench.py

bench-gpu-dpo: ## on a GPU machine: DPO + QLoRA on a ~1B Llama shape, bf16, seq 1024, vs plain TRL DPOTrainer (tokens/s, peak memory)
	PYTHONPATH=trainer/src:trainer/contract/src:operator/src $(PY) bench/gpu_dpo_bench.py

bench-operator: ## the operator's work per watch event (no cluster), then N FineTuneJobs at once against the local control plane
	$(PY) bench/operator_events.py
	$(PY) bench/operator_bench.py

bench-serving: ## vLLM serving an adapter vs the merged model, side by side: requests/s, p50/p99
	KUBETUNE_VLLM_VENV=$$(bash hack/vllm-env.sh) $(PY) bench/serving_bench.py

bench-sweep: ## a 50-trial FineTuneSweep (instant trainer): the operator's latency and requests per trial
	$(PY) bench/sweep_bench.py

crds: ## regenerate crds/, the chart's copy and README's spec reference from the pydantic models
	$(PY) -m kubetune_operator.cli crd --write
	$(PY) -m kubetune_operator.cli docs --write

lint: ## static checks: import contracts (.importlinter), example manifests, Dockerfiles and test Containerfiles (hadolint)
	$$(hack/python-env.sh)/bin/lint-imports --no-cache
	$(PY) -m kubetune_operator.cli validate examples/*.yaml examples/*/*.yaml
	bash hack/lint-dockerfiles.sh

python-env: ## create the cached development virtualenv
	@hack/python-env.sh

cluster-tools: ## build (once) kube-apiserver & co, etcd, MinIO, Helm; Prometheus from Debian
	bash hack/cluster-tools/build.sh

kueue: ## build (once) Kueue for the queueing tests (make test builds it beside the other tools)
	bash hack/cluster-tools/build-kueue.sh

cluster-up: cluster-tools ## start a local control plane, MinIO and a real node (kubelet, containerd, CoreDNS)
	$(PY) -m tests.harness.cluster up

cluster-down: ## stop what cluster-up started
	$(PY) -m tests.harness.cluster down

images: ## build the operator and trainer images (CPU flavour, buildah; no Docker engine); prints sizes and contents
	bash hack/images/build.sh operator trainer

images-vllm: ## build the test-only vLLM CPU image (tests/images/vllm)
	bash hack/images/build.sh vllm
