# TheWorld: `make test` and `make demo` work on a fresh machine (CPU, no Hub access).
PY ?= python3
VENV ?= .venv
PYBIN := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The transformers 4.57 environment for tests/compat (see requirements/compat-4.57.txt).
VENV457 ?= .venv-457
PY457 := $(VENV457)/bin/python
STAMP457 := $(VENV457)/.installed

.PHONY: venv venv-457 test test-compat demo bench clean

venv: $(STAMP)

# torch is installed first and pinned: an unpinned torch pulls GBs of CUDA wheels.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PY) -m venv $(VENV)
	$(PYBIN) -m pip install -q --upgrade pip
	$(PYBIN) -m pip install -q torch==2.13.0
	$(PYBIN) -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

venv-457: $(STAMP457)

# Same torch wheel as .venv, pinned first; the project goes on the path through a .pth file.
$(STAMP457): requirements/compat-4.57.txt
	rm -rf $(VENV457)
	$(PY) -m venv $(VENV457)
	$(PY457) -m pip install -q torch==2.13.0
	$(PY457) -m pip install -q -r requirements/compat-4.57.txt
	echo "$(CURDIR)/src" > "$$($(PY457) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/theworld-src.pth"
	touch $(STAMP457)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PYBIN) -m pytest -q tests
	$(MAKE) test-compat

# tests/compat under transformers 4.57; checkpoints cross between it and .venv (transformers 5).
test-compat: $(STAMP) $(STAMP457)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false THEWORLD_COMPAT_OTHER_PYTHON="$(CURDIR)/$(PYBIN)" \
		$(PY457) -m pytest -q -p no:cacheprovider tests/compat

# The demo starts from scratch each time (same seed, same numbers).
demo: $(STAMP)
	rm -rf runs/demo
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(VENV)/bin/theworld demo --output-dir runs/demo

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYBIN) benchmarks/run_all.py --output BENCHMARKS.md

clean:
	rm -rf $(VENV) $(VENV457) runs .pytest_cache
