"""Every command the README shows runs, verbatim, in a sandbox holding tiny stand-ins.

The sandbox working directory holds the tiny Gemma 3 at `google/gemma-3-4b-it/` and the tiny VAE
at `nvidia/Cosmos-Predict2-2B-Video2World/` (written by the README's `theworld make-tiny` command;
local folders win over hub ids in `from_pretrained`),
small files in each data format at the paths the example configs name, and a copy of `configs/`.
Commands get only budget flags appended (steps, frame size). A README command with no entry in
`BUDGET_FLAGS` fails this test: nothing shown to users goes unrun.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from theworld.testing.inputs import random_image

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TINY_WORLD = ["--world_image_size", "64", "--world_tokens_per_frame", "16", "--world_num_frames", "9"]
TRAIN_BUDGET = TINY_WORLD + ["--max_steps", "2", "--bf16", "false", "--per_device_train_batch_size", "2",
                             "--gradient_accumulation_steps", "1", "--dataloader_num_workers", "0", "--report_to", "none",
                             "--num_train_epochs", "1", "--warmup_steps", "0"]  # fmt: skip
# (command prefix) -> flags appended; commands not run here say why in the value (a str).
BUDGET_FLAGS: dict[str, list[str] | str] = {
    "make test": "this suite",
    "theworld make-tiny": "builds the sandbox's models (the sandbox fixture)",
    "make demo": "run by CI (.ci/run) after make test",
    "theworld demo --model": ["--n-train", "4", "--n-heldout", "4", "--total-steps", "2", "--batch-size", "2",
                              "--tasks", "direction", "--world-image-size", "64", "--world-tokens-per-frame", "16"],
    "theworld cache-latents --config configs/align.yaml": TINY_WORLD,
    "theworld cache-latents --config configs/finetune.yaml": TINY_WORLD,
    "theworld train --config configs/align.yaml": TRAIN_BUDGET,
    "theworld train --config configs/finetune.yaml": TRAIN_BUDGET,
    "accelerate launch --config_file configs/accelerate/ddp.yaml": "needs GPUs; the CPU form "
    "(accelerate launch --multi_gpu --num_processes 2 -m theworld train) runs in tests/training/test_train_ddp.py",
    "theworld estimate-memory": [],  # from gemma-3-4b's config alone, on the meta device
    "theworld eval": ["--limit", "2", "--batch-size", "2"],
    "theworld compare": [],
    "theworld parity": [],
    "theworld params": [],
    "theworld chat": ["--max-new-tokens", "4"],  # stdin is empty: it loads, greets and exits
    "theworld serve": "a server runs until stopped; tests/serving/test_server.py starts it and runs the README's "
    "openai client example against it",
}


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[str]:
    commands = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def budget_for(command: str) -> list[str] | str:
    matches = [prefix for prefix in BUDGET_FLAGS if command.startswith(prefix)]
    assert matches, f"README command has no entry in BUDGET_FLAGS (so no test runs it): {command}"
    return BUDGET_FLAGS[max(matches, key=len)]


def write_data(root: Path) -> None:
    """Tiny files in the formats configs/align.yaml, configs/finetune.yaml and the eval commands name."""
    cc3m = root / "data" / "llava-cc3m"
    (cc3m / "images").mkdir(parents=True)
    records = []
    for i in range(4):
        random_image(i, 48).save(cc3m / "images" / f"GCC_train_{i:09d}.jpg")
        records.append({"id": f"GCC_train_{i:09d}", "image": f"GCC_train_{i:09d}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
            {"from": "gpt", "value": "a red ball on a blue table"}]})  # fmt: skip
    (cc3m / "chat.json").write_text(json.dumps(records))

    spatial, images = root / "data" / "openspatial", root / "data" / "openimages" / "train"
    spatial.mkdir(parents=True)
    images.mkdir(parents=True)
    lines = []
    for i in range(4):
        random_image(10 + i, 48).save(images / f"{i:016x}.jpg")
        lines.append(json.dumps({"filename": f"{i:016x}", "bbox": [[2, 2, 20, 20], [24, 24, 40, 40]], "rle": [],
                                 "conversations": [
            {"from": "human", "value": "<image>\nIs <mask> <depth> closer than <mask> <depth>?"},
            {"from": "gpt", "value": "Yes, Region [0] is closer than Region [1]."}]}))  # fmt: skip
    (spatial / "openspatial.jsonl").write_text("\n".join(lines) + "\n")

    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(seed: int) -> dict:
        buffer = io.BytesIO()
        random_image(seed, 48).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": f"{seed}.png"}

    rows = [{"idx": f"val_Relative_Depth_{i}", "question": "Which point is closer to the camera?",
             "sub_task": "Relative_Depth", "image_1": png(20 + i), "image_2": None, "image_3": None, "image_4": None,
             "choices": ["A", "B"], "answer": "(A)" if i % 2 else "(B)",
             "prompt": "Which point is closer to the camera?\nSelect from the following choices.\n(A) A\n(B) B"}
            for i in range(4)]  # fmt: skip
    blink = root / "BLINK-Benchmark" / "BLINK" / "Relative_Depth"
    blink.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), blink / "val-00000-of-00001.parquet")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The models come from the README's own `theworld make-tiny` command, run in the sandbox."""
    root = tmp_path_factory.mktemp("readme")
    (make_tiny,) = [c for c in readme_commands() if c.startswith("theworld make-tiny")]
    result = run_in(root, [sys.executable, "-m", "theworld", *shlex.split(make_tiny)[1:]])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "google" / "gemma-3-4b-it" / "config.json").is_file()
    assert (root / "nvidia" / "Cosmos-Predict2-2B-Video2World" / "vae" / "config.json").is_file()
    shutil.copytree(REPO / "configs", root / "configs")
    write_data(root)
    return root


def run_in(root: Path, argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_every_readme_command_is_accounted_for():
    commands = readme_commands()
    assert any(c.startswith("theworld train") for c in commands)
    for command in commands:
        budget_for(command)


def test_readme_commands_run_in_order(sandbox):
    ran = 0
    for command in readme_commands():
        budget = budget_for(command)
        if isinstance(budget, str):
            continue
        argv = shlex.split(command)
        if argv[0] == "theworld":
            argv = [sys.executable, "-m", "theworld", *argv[1:]]
        result = run_in(sandbox, argv + list(budget))
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        ran += 1
    assert ran >= 6


def test_readme_python_quick_start_runs(sandbox):
    (block,) = [b for b in readme_blocks("python") if "TheWorld.from_pretrained" in b]
    script = sandbox / "quick_start.py"
    script.write_text(block + "\nassert out.shape[1] > inputs['input_ids'].shape[1]\nprint('trainable', trainable, total)\n")
    result = run_in(sandbox, [sys.executable, str(script)])
    assert result.returncode == 0, result.stderr[-6000:]
    trainable, total = (int(x) for x in result.stdout.split("trainable")[-1].split())
    assert 0 < trainable < total
