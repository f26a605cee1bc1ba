"""A training file larger than the memory the run may use trains: records stay on disk (Arrow, memory-mapped).

OpenSpatialDataset is one ~30 GB JSON array. Here a process allows itself 160 MB of memory beyond what
its libraries take (RLIMIT_DATA, set after the imports) and trains two steps on a 256 MB OpenSpatial
file; reading that file whole fails under the same limit, so the limit would have caught a loader
that held it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

FILE_MB, ALLOWED_MB = 256, 160

_CHILD = """
import json, resource, sys
import accelerate, datasets, pyarrow, torch, transformers  # the libraries' own memory is not the data's
from theworld.training.config import build_config
from theworld.training.run import train

def data_bytes():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmData"))

values, allowed_mb = json.loads(sys.argv[1]), int(sys.argv[2])
base = data_bytes()
limit = base + allowed_mb * 2**20
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
result = train(build_config(values))
try:
    with open(values["train_data"], "rb") as handle:
        handle.read()
    whole = "read"
except MemoryError:
    whole = "MemoryError"
print(json.dumps({"steps": result.global_step, "whole_file": whole, "grew_mb": (data_bytes() - base) / 2**20}))
"""


def _write_openspatial(path, megabytes: int) -> int:
    """A JSON array of OpenSpatial records; each carries its (ignored) RLE masks, the bulk of the real file."""
    mask = {"size": [32, 32], "counts": "x" * 16_000}
    record = {
        "filename": "ffee00112233aabb",
        "conversations": [
            {"from": "human", "value": "<image>\nIs <mask> <depth> to the left of <mask> <depth>?"},
            {"from": "gpt", "value": "Region [0] is to the left of Region [1]."},
        ],
        "bbox": [[1, 2, 10, 12], [5, 6, 20, 22]],
        "rle": [mask, mask],
    }
    text = json.dumps(record)
    count = megabytes * 2**20 // len(text) + 1
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[" + text)
        for _ in range(count - 1):
            handle.write("," + text)
        handle.write("]")
    return count


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc/self/status are Linux's")
def test_a_file_larger_than_the_allowed_memory_trains(tmp_path, tiny_gemma_dir, tiny_vae_dir, world_settings):
    data = tmp_path / "openspatial.json"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "ffee00112233aabb.jpg")
    count = _write_openspatial(data, FILE_MB)
    assert os.path.getsize(data) > FILE_MB * 2**20 > ALLOWED_MB * 2**20
    values = dict(
        model_name_or_path=tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, train_data=str(data),
        train_data_format="openspatial", output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
        save_steps=100, report_to="none", **world_settings,
    )  # fmt: skip
    # jemalloc/mimalloc reserve address space that RLIMIT_DATA counts but never touch it: use malloc.
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system", "HF_DATASETS_CACHE": str(tmp_path / "arrow"), "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(values), str(ALLOWED_MB)],
            capture_output=True, text=True, env=env, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{count} records, {os.path.getsize(data) / 2**20:.0f} MB: {result}")
        assert result["steps"] == 2
        assert result["whole_file"] == "MemoryError"  # the limit is real: holding the file would not fit
    finally:
        data.unlink()
        shutil.rmtree(tmp_path / "arrow", ignore_errors=True)
