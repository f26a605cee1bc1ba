"""Fixtures for the tests that run under both supported transformers versions (4.57 and 5.x).

`make test` runs this folder under transformers 5 with the main suite; `make test-compat` runs it
again in `.venv-457` (transformers 4.57) with `THEWORLD_COMPAT_OTHER_PYTHON` naming the other
environment's interpreter, so that checkpoints are written by one version and read by the other.
Without that variable the "other side" is the running version (a same-version round trip).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER_PATH = Path(__file__).with_name("interchange_worker.py")
OTHER_PYTHON_VAR = "THEWORLD_COMPAT_OTHER_PYTHON"


def _load_worker():
    spec = importlib.util.spec_from_file_location("theworld_compat_interchange_worker", WORKER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def worker():
    """The interchange worker module, imported in this process."""
    return _load_worker()


class Side:
    """One transformers version: this process, or another interpreter run as a subprocess."""

    def __init__(self, python: str | None, worker) -> None:
        self.python = python
        self.worker = worker

    @property
    def label(self) -> str:
        if self.python is None:
            import transformers

            return f"this process (transformers {transformers.__version__})"
        return self.python

    def write(self, root: Path) -> None:
        if self.python is None:
            self.worker.write(root)
        else:
            self._run("write", str(root))

    def logits(self, root: Path, out: Path) -> dict:
        if self.python is None:
            return self.worker.logits(root)
        self._run("logits", str(root), str(out))
        return torch.load(out)

    def _run(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        # Same thread count as this process: on AVX-512 Intel CPUs it changes the last bits.
        threads = str(torch.get_num_threads())
        proc = subprocess.run(
            [self.python, str(WORKER_PATH), threads, *args], env=env, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise AssertionError(f"{self.python} {WORKER_PATH.name} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def this_side(worker) -> Side:
    return Side(None, worker)


@pytest.fixture(scope="session")
def other_side(worker) -> Side:
    python = os.environ.get(OTHER_PYTHON_VAR) or None
    if python is not None and not Path(python).is_file():
        raise pytest.UsageError(f"{OTHER_PYTHON_VAR}={python} is not a file")
    return Side(python, worker)


@pytest.fixture(scope="session")
def transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


@pytest.fixture(scope="session")
def rope_gemma_dir(tmp_path_factory, worker) -> str:
    """A tiny Gemma 3 checkpoint with non-default rope settings, written by the running version."""
    from theworld.testing.tiny import TinyGemmaSpec, make_tiny_gemma

    return str(make_tiny_gemma(tmp_path_factory.mktemp("rope_gemma"), TinyGemmaSpec(**worker.ROPE)))


def pytest_report_header(config) -> list[str]:
    import transformers

    other = os.environ.get(OTHER_PYTHON_VAR)
    return [f"compat: transformers {transformers.__version__} ({sys.executable}); other side: {other or 'none'}"]
