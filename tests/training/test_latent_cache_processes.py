"""`theworld cache-latents` in two processes (`accelerate launch`, gloo on the CPU) builds the cache one
process builds: one manifest, the same keys and latents, each file encoded by exactly one process into
shards of its own, and a cache training opens as complete.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from theworld.training.latent_cache import MANIFEST_NAME, SHARD_PATTERN, BuildStats, share_owner

N_IMAGES = 8


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_gemma_dir, tiny_vae_dir) -> Path:
    """A training config over 8 distinct images; image 0 is used by two samples (encoded once)."""
    root = tmp_path_factory.mktemp("cache_processes")
    records = []
    for i in range(N_IMAGES):
        pixels = np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i}.png")
        records.append({"id": f"s{i}", "question": "What is there?", "answer": "a ball", "image": f"img{i}.png"})
    records.append({"id": "again", "question": "Where is it?", "answer": "left", "image": "img0.png"})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    path = root / "train.yaml"
    path.write_text(
        f"model_name_or_path: {tiny_gemma_dir}\ncosmos_model_name: {tiny_vae_dir}\n"
        f"train_data: {root / 'train.jsonl'}\noutput_dir: {root / 'out'}\n"
        f"latent_cache_dir: {root / 'cache'}\nworld_tokens_per_frame: 16\nworld_image_size: 64\n"
    )
    return path


def cache_latents(config: Path, cache_dir: Path, processes: int) -> subprocess.CompletedProcess:
    args = ["cache-latents", "--config", str(config), "--latent_cache_dir", str(cache_dir), "--no-progress", "--batch-size", "3"]
    if processes == 1:
        command = [sys.executable, "-m", "theworld", *args]
    else:
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_free_port()), "-m", "theworld", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def shards(cache_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Shard file name -> {key: latents}."""
    found = {}
    for path in sorted(cache_dir.iterdir()):
        if SHARD_PATTERN.match(path.name):
            with safe_open(str(path), framework="np") as handle:
                found[path.name] = {key: handle.get_tensor(key) for key in handle.keys()}
    return found


@pytest.mark.slow
def test_two_processes_build_the_cache_one_process_builds(config, tmp_path):
    one = cache_latents(config, tmp_path / "one", 1)
    two = cache_latents(config, tmp_path / "two", 2)
    for result in (one, two):
        assert f"{N_IMAGES + 1} visuals, {N_IMAGES} unique: {N_IMAGES} encoded" in result.stdout
    assert "images/s over 2 process(es)" in two.stdout and "images/s over 1 process(es)" in one.stdout
    assert two.stdout.count("latent cache ") == 1  # the main process alone reports

    # One manifest, the same one: the same encoder identity and settings.
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if not SHARD_PATTERN.match(p.name)) == [MANIFEST_NAME]
    manifests = [json.loads((tmp_path / name / MANIFEST_NAME).read_text()) for name in ("one", "two")]
    assert manifests[0] == manifests[1]

    # The same latents under the same keys (batches differ: a stated tolerance, not bit-identity).
    expected = {k: v for part in shards(tmp_path / "one").values() for k, v in part.items()}
    written = shards(tmp_path / "two")
    got = {k: v for part in written.values() for k, v in part.items()}
    assert sum(map(len, written.values())) == len(got) == N_IMAGES  # no image encoded twice
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5, rtol=0)

    # Each process wrote the files share_owner gave it, into shards of its own.
    owners = [share_owner(str(config.parent / f"img{i}.png"), None, 2) for i in range(N_IMAGES)]
    assert len(written) == len(set(owners))  # one shard per process that had work (shard_size 256)


def test_build_stats_add_up_over_processes():
    parts = [BuildStats(visuals=5, unique=4, encoded=3, already_cached=1, duplicates=1, shards_written=1, seconds_encoding=0.5),
             BuildStats(visuals=4, unique=4, encoded=4, shards_written=1, seconds_encoding=0.25, other_processes=5)]  # fmt: skip
    total = BuildStats.total([parts[0], vars(parts[1])])
    assert (total.visuals, total.unique, total.encoded, total.already_cached, total.duplicates) == (9, 8, 7, 1, 1)
    assert (total.shards_written, total.seconds_encoding, total.other_processes) == (2, 0.75, 0)


def test_share_owner_splits_files_by_path_and_memory_images_by_key(tmp_path):
    from theworld.processing.processor import Clip

    paths = [str(tmp_path / f"f{i}.png") for i in range(64)]
    owners = [share_owner(p, None, 3) for p in paths]
    assert set(owners) == {0, 1, 2}
    assert owners == [share_owner(os.path.relpath(p), None, 3) for p in paths]  # the same file, however named
    assert share_owner(Clip(paths[:5]), None, 3) == share_owner(Clip(paths[:5]), "ignored", 3)
    image = Image.new("RGB", (4, 4))
    assert share_owner(image, "ab" * 32, 3) == share_owner(Image.new("RGB", (4, 4)), "ab" * 32, 3)
    with pytest.raises(ValueError, match="by its key"):
        share_owner(image, None, 3)
