# TheWorld: `make test` and `make demo` work on a fresh machine (CPU, no Hub access).
PY ?= python3
VENV ?= .venv
PYBIN := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean

venv: $(STAMP)

# torch is installed first and pinned: an unpinned torch pulls GBs of CUDA wheels.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PY) -m venv $(VENV)
	$(PYBIN) -m pip install -q --upgrade pip
	$(PYBIN) -m pip install -q torch==2.13.0
	$(PYBIN) -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PYBIN) -m pytest -q tests

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(VENV)/bin/theworld demo --output-dir runs/demo

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYBIN) benchmarks/run_all.py --output BENCHMARKS.md

clean:
	rm -rf $(VENV) runs .pytest_cache
