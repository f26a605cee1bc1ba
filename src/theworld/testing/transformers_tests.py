"""transformers' own model test mixins, loaded from its source distribution.

`make transformers-tests` downloads the transformers source distribution pinned in
requirements/constraints.txt (checksum-verified), unpacks its `tests/*.py` under `.venv` as the
package `transformers_tests` and `make test` points THEWORLD_TRANSFORMERS_TESTS at it: nothing of
it is copied into this repository. Its `test_modeling_common.py` imports two modules the
distribution does not ship (`tests/exporters/test_export.py`, `tests/generation/test_utils.py`);
they are replaced by empty mixins, so the torch.export and `generate` tests they hold do not run.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

PACKAGE = "transformers_tests"
_MISSING_FROM_SDIST = {"exporters.test_export": "ExportTesterMixin", "generation.test_utils": "GenerationTesterMixin"}


def transformers_tests_dir() -> Path:
    """The folder holding the unpacked `transformers_tests` package."""
    import transformers

    repo = Path(__file__).resolve().parents[3]
    default = repo / ".venv" / f"transformers-tests-{transformers.__version__}"
    folder = Path(os.environ.get("THEWORLD_TRANSFORMERS_TESTS") or default)
    if not (folder / PACKAGE / "test_modeling_common.py").is_file():
        raise RuntimeError(
            f"transformers' common model tests are not in {folder}: run `make transformers-tests` (it fetches "
            f"the transformers {transformers.__version__} source distribution) or set THEWORLD_TRANSFORMERS_TESTS"
        )
    return folder


def load_test_modeling_common() -> types.ModuleType:
    """`transformers_tests.test_modeling_common`, with empty stand-ins for the modules the sdist lacks."""
    folder = str(transformers_tests_dir())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    for module_name, mixin in _MISSING_FROM_SDIST.items():
        package, _, _ = f"{PACKAGE}.{module_name}".rpartition(".")
        if package not in sys.modules:
            sys.modules[package] = types.ModuleType(package)
        stub = types.ModuleType(f"{PACKAGE}.{module_name}")
        setattr(stub, mixin, type(mixin, (), {"__doc__": "not in the transformers source distribution: no tests"}))
        sys.modules.setdefault(stub.__name__, stub)
    return importlib.import_module(f"{PACKAGE}.test_modeling_common")
