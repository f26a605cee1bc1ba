"""Every command the README and docs/recipe.md show runs, verbatim, in a sandbox holding tiny stand-ins.

The sandbox working directory holds the tiny Gemma 3 at `google/gemma-3-4b-it/` and the tiny VAE
at `nvidia/Cosmos-Predict2-2B-Video2World/` (written by the README's `theworld make-tiny` command;
local folders win over hub ids in `from_pretrained`),
small files in each data format at the paths the example configs name, and a copy of `configs/`.
docs/recipe.md gets a sandbox of its own, holding what its downloads leave (a zip of images where
it unzips one, BLINK parquet files, a VSR split and COCO zips), so its unpacking, caching,
training, evaluation and comparison commands all run in order.
Commands get only budget flags appended (steps, frame size). A command with no entry in
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
from collections.abc import Callable
from pathlib import Path

import pytest

from theworld.testing.inputs import random_image

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RECIPE = REPO / "docs" / "recipe.md"
NETWORK = "needs the network; the sandbox holds tiny stand-ins of what it downloads"
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
    # docs/recipe.md
    "python3 -m venv": "creates the environment this test runs in (make venv)",
    "pip install torch==": "a CUDA wheel (network, GPU machine); make venv installs the CPU one",
    "pip install -c requirements/constraints.txt -e .": "what make venv runs (with [dev])",
    "hf auth login": "Hub credentials (network)",
    "hf download": NETWORK,
    "wget": NETWORK,
    "aws s3": NETWORK,
    "python -m zipfile -e": [],
    "theworld cache-latents --config configs/recipe/": TINY_WORLD,
    "theworld train --config configs/recipe/": TRAIN_BUDGET,
    "accelerate launch --multi_gpu --num_processes 8 -m theworld cache-latents": "needs GPUs; the CPU form "
    "(--num_processes 2) runs in tests/training/test_latent_cache_processes.py",
    "accelerate launch --multi_gpu --num_processes 8 -m theworld eval": "needs GPUs; the CPU form "
    "(--num_processes 2) runs in tests/evaluation/test_eval_processes.py",
}


def readme_blocks(language: str, doc: Path = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", doc.read_text(), flags=re.S)


def readme_commands(doc: Path = README) -> list[str]:
    commands = []
    for block in readme_blocks("bash", doc):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def budget_for(command: str) -> list[str] | str:
    matches = [prefix for prefix in BUDGET_FLAGS if command.startswith(prefix)]
    assert matches, f"README command has no entry in BUDGET_FLAGS (so no test runs it): {command}"
    return BUDGET_FLAGS[max(matches, key=len)]


def cc3m_record(image: str) -> dict:
    """One LLaVA-CC3M-Pretrain record (chat.json) for `image`."""
    return {"id": image.rsplit(".", 1)[0], "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
        {"from": "gpt", "value": "a red ball on a blue table"}]}  # fmt: skip


def openspatial_row(i: int) -> dict:
    """One OpenSpatialDataset row about OpenImages image `i` (two boxes, a depth question)."""
    return {"filename": f"{i:016x}", "bbox": [[2, 2, 20, 20], [24, 24, 40, 40]], "rle": [], "conversations": [
        {"from": "human", "value": "<image>\nIs <mask> <depth> closer than <mask> <depth>?"},
        {"from": "gpt", "value": "Yes, Region [0] is closer than Region [1]."}]}  # fmt: skip


def write_data(root: Path) -> None:
    """Tiny files in the formats configs/align.yaml, configs/finetune.yaml and the eval commands name."""
    cc3m = root / "data" / "llava-cc3m"
    (cc3m / "images").mkdir(parents=True)
    records = []
    for i in range(4):
        random_image(i, 48).save(cc3m / "images" / f"GCC_train_{i:09d}.jpg")
        records.append(cc3m_record(f"GCC_train_{i:09d}.jpg"))
    (cc3m / "chat.json").write_text(json.dumps(records))

    spatial, images = root / "data" / "openspatial", root / "data" / "openimages" / "train"
    spatial.mkdir(parents=True)
    images.mkdir(parents=True)
    lines = []
    for i in range(4):
        random_image(10 + i, 48).save(images / f"{i:016x}.jpg")
        lines.append(json.dumps(openspatial_row(i)))
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


def write_recipe_data(root: Path) -> None:
    """What docs/recipe.md's downloads leave: CC3M's chat.json and images.zip, OpenSpatial's JSON array
    and OpenImages files, BLINK's parquet files per task, VSR's test split and the COCO zips."""
    import zipfile

    cc3m = root / "data" / "llava-cc3m"
    cc3m.mkdir(parents=True)
    records = []
    with zipfile.ZipFile(cc3m / "images.zip", "w") as archive:
        for i in range(4):
            name = f"GCC_train_{i:09d}.jpg"
            buffer = io.BytesIO()
            random_image(i, 48).save(buffer, format="JPEG")
            archive.writestr(name, buffer.getvalue())
            records.append(cc3m_record(name))
    (cc3m / "chat.json").write_text(json.dumps(records))

    spatial, images = root / "data" / "openspatial", root / "data" / "openimages" / "train"
    spatial.mkdir(parents=True)
    images.mkdir(parents=True)
    rows = []
    for i in range(4):
        random_image(10 + i, 48).save(images / f"{i:016x}.jpg")
        rows.append(openspatial_row(i))
    (spatial / "result_10_depth_convs.json").write_text(json.dumps(rows))

    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(seed: int) -> dict:
        buffer = io.BytesIO()
        random_image(seed, 48).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": f"{seed}.png"}

    for task, question in (("Relative_Depth", "Which point is closer to the camera?"),
                           ("Spatial_Relation", "Is the car beneath the cat?")):  # fmt: skip
        choices = ["A", "B"] if task == "Relative_Depth" else ["yes", "no"]
        blink = [{"idx": f"val_{task}_{i}", "question": question, "sub_task": task, "image_1": png(20 + i),
                  "image_2": None, "image_3": None, "image_4": None, "choices": choices,
                  "answer": "(A)" if i % 2 else "(B)", "prompt": question} for i in range(4)]  # fmt: skip
        (root / "data" / "blink" / task).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(blink), root / "data" / "blink" / task / "val-00000-of-00001.parquet")

    vsr, coco = root / "data" / "vsr", root / "data" / "coco"
    vsr.mkdir(parents=True)
    coco.mkdir(parents=True)
    lines = []
    for i, split in enumerate(["train2017", "val2017", "train2017", "val2017"]):
        name = f"{i + 1:012d}.jpg"
        with zipfile.ZipFile(coco / f"{split}.zip", "a") as archive:
            buffer = io.BytesIO()
            random_image(30 + i, 48).save(buffer, format="JPEG")
            archive.writestr(f"{split}/{name}", buffer.getvalue())
        lines.append(json.dumps({"image": name, "image_link": f"http://images.cocodataset.org/{split}/{name}",
                                 "caption": "The cat is on the bed.", "label": i % 2, "relation": "on",
                                 "subj": "cat", "obj": "bed"}))  # fmt: skip
    (vsr / "test.jsonl").write_text("\n".join(lines) + "\n")


def make_sandbox(root: Path, write: Callable[[Path], None]) -> Path:
    """The models come from the README's own `theworld make-tiny` command, run in the sandbox."""
    (make_tiny,) = [c for c in readme_commands() if c.startswith("theworld make-tiny")]
    result = run_in(root, [sys.executable, "-m", "theworld", *shlex.split(make_tiny)[1:]])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "google" / "gemma-3-4b-it" / "config.json").is_file()
    assert (root / "nvidia" / "Cosmos-Predict2-2B-Video2World" / "vae" / "config.json").is_file()
    shutil.copytree(REPO / "configs", root / "configs")
    write(root)
    return root


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return make_sandbox(tmp_path_factory.mktemp("readme"), write_data)


def run_in(root: Path, argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("doc", [README, RECIPE], ids=["README", "recipe"])
def test_every_command_is_accounted_for(doc):
    commands = readme_commands(doc)
    assert any(c.startswith("theworld train") for c in commands)
    for command in commands:
        budget_for(command)


def run_commands_in_order(sandbox: Path, doc: Path) -> int:
    ran = 0
    for command in readme_commands(doc):
        budget = budget_for(command)
        if isinstance(budget, str):
            continue
        argv = shlex.split(command)
        if argv[0] == "theworld":
            argv = [sys.executable, "-m", "theworld", *argv[1:]]
        elif argv[0] in ("python", "python3"):  # the recipe's python is the environment's
            argv = [sys.executable, *argv[1:]]
        result = run_in(sandbox, argv + list(budget))
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        ran += 1
    return ran


def test_readme_commands_run_in_order(sandbox):
    assert run_commands_in_order(sandbox, README) >= 6


@pytest.mark.slow
def test_recipe_commands_run_in_order(tmp_path):
    """The recipe end to end on tiny checkpoints: unpack, cache, align, finetune, 9 evaluations, compare."""
    root = make_sandbox(tmp_path, write_recipe_data)
    assert run_commands_in_order(root, RECIPE) >= 20
    for name in ("blink-depth", "blink-relation", "vsr"):
        report = (root / "runs" / "recipe" / "eval" / f"{name}.md").read_text()
        assert "zero-world" in report and "world-off" in report
    metrics = json.loads((root / "runs" / "recipe" / "eval" / "vsr" / "metrics.json").read_text())
    assert metrics["n"] == 2 and metrics["world"]["tokens_seen"] > 0  # --limit 2, world tokens fed


def test_readme_python_quick_start_runs(sandbox):
    (block,) = [b for b in readme_blocks("python") if "TheWorld.from_pretrained" in b]
    script = sandbox / "quick_start.py"
    script.write_text(block + "\nassert out.shape[1] > inputs['input_ids'].shape[1]\nprint('trainable', trainable, total)\n")
    result = run_in(sandbox, [sys.executable, str(script)])
    assert result.returncode == 0, result.stderr[-6000:]
    trainable, total = (int(x) for x in result.stdout.split("trainable")[-1].split())
    assert 0 < trainable < total
