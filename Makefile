# TheWorld: `make test` and `make demo` work on a fresh machine (CPU, no Hub access).
PY ?= python3
VENV ?= .venv
PYBIN := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The transformers 4.57 environment for tests/compat (see requirements/compat-4.57.txt).
VENV457 ?= .venv-457
PY457 := $(VENV457)/bin/python
STAMP457 := $(VENV457)/.installed

.PHONY: venv venv-457 transformers-tests test test-compat demo bench clean

# transformers' own common model tests (tests/model/transformers_common) come from its source
# distribution, the version pinned in requirements/constraints.txt, checked against this hash.
TRANSFORMERS_VERSION := $(shell sed -n 's/^transformers==//p' requirements/constraints.txt)
TRANSFORMERS_SDIST_SHA256 := 19d647a4d5d903a7c644ca5cde2d86efc3dde7d8c687ae7988806ff2205efa71
TRANSFORMERS_TESTS := $(VENV)/transformers-tests-$(TRANSFORMERS_VERSION)
TRANSFORMERS_TESTS_STAMP := $(TRANSFORMERS_TESTS)/.fetched

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

transformers-tests: $(TRANSFORMERS_TESTS_STAMP)

# Only its tests/*.py are kept, as the package `transformers_tests` (never copied into the repo).
$(TRANSFORMERS_TESTS_STAMP): $(STAMP) requirements/constraints.txt
	rm -rf $(TRANSFORMERS_TESTS) && mkdir -p $(TRANSFORMERS_TESTS)/transformers_tests
	$(PYBIN) -m pip download -q --no-deps --no-binary :all: -d $(TRANSFORMERS_TESTS) transformers==$(TRANSFORMERS_VERSION)
	echo "$(TRANSFORMERS_SDIST_SHA256)  $(TRANSFORMERS_TESTS)/transformers-$(TRANSFORMERS_VERSION).tar.gz" | sha256sum -c --quiet
	tar -xzf $(TRANSFORMERS_TESTS)/transformers-$(TRANSFORMERS_VERSION).tar.gz -C $(TRANSFORMERS_TESTS)/transformers_tests \
		--strip-components=2 --wildcards 'transformers-$(TRANSFORMERS_VERSION)/tests/*.py'
	touch $(TRANSFORMERS_TESTS)/transformers_tests/__init__.py
	rm $(TRANSFORMERS_TESTS)/transformers-$(TRANSFORMERS_VERSION).tar.gz
	touch $@

test: $(STAMP) $(TRANSFORMERS_TESTS_STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false THEWORLD_TRANSFORMERS_TESTS="$(CURDIR)/$(TRANSFORMERS_TESTS)" \
		$(PYBIN) -m pytest -q tests
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
