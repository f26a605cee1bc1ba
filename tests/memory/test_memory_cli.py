"""`theworld estimate-memory`: a local checkpoint or a known id, the table and total, JSON, clear errors."""

from __future__ import annotations

import json

from theworld.cli.main import main
from theworld.memory.configs import load_model_config, load_vae_config
from theworld.memory.measure import small_config


def test_estimate_memory_for_gemma3_4b_prints_a_table_and_writes_json(capsys, tmp_path):
    out = tmp_path / "estimate.json"
    code = main(["estimate-memory", "--model", "google/gemma-3-4b-it", "--stage", "vision", "--batch-size", "8",
                 "--seq-len", "1024", "--gradient-checkpointing", "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    for row in ("weights: language model", "weights: VAE encoder", "gradients", "optimizer states",
                "activations: language model", "activations: vision tower", "activations: world projector",
                "activations: loss", "VAE encoder working memory", "**total (peak)**"):  # fmt: skip
        assert f"| {row} |" in printed, row
    assert "256 image + 256 world" in printed
    data = json.loads(out.read_text())
    assert data["setup"]["stage"] == "vision" and data["setup"]["gradient_checkpointing"] is True
    assert data["peak_bytes"] == max(sum(r["at_peak"] for r in data["rows"]), 0)  # the table adds up to the peak
    assert 10 * 2**30 < data["peak_bytes"] < 60 * 2**30


def test_a_latent_cache_drops_the_vae(capsys):
    assert main(["estimate-memory", "--model", "gemma-3-4b", "--batch-size", "2", "--latent-cache"]) == 0
    printed = capsys.readouterr().out
    assert "weights: VAE encoder" not in printed and "not run: latents come from the cache" in printed


def test_local_checkpoints_gemma_and_theworld(tiny_gemma_dir, tiny_vae_dir, tmp_path, capsys):
    gemma = load_model_config(tiny_gemma_dir, world_image_size=64, world_tokens_per_frame=16)
    assert gemma.text_config.hidden_size == 64 and gemma.world_tokens_per_frame == 16
    saved = tmp_path / "theworld"
    small_config().save_pretrained(saved)
    assert load_model_config(str(saved)).text_config.hidden_size == 128
    assert load_vae_config(tiny_vae_dir)["base_dim"] == 8
    assert load_vae_config("nvidia/Cosmos-Predict2-2B-Video2World") == {}  # the Wan 2.1 defaults
    assert main(["estimate-memory", "--model", tiny_gemma_dir, "--cosmos", tiny_vae_dir, "--world-image-size", "64",
                 "--world-tokens", "16", "--seq-len", "128", "--supervised-tokens", "8", "--unit", "MiB"]) == 0  # fmt: skip
    assert "size (MiB)" in capsys.readouterr().out


def test_errors_name_the_flag(capsys, tmp_path):
    assert main(["estimate-memory", "--model", "someone/unknown-model"]) == 2
    assert "--model someone/unknown-model: not a local folder and not a known model" in capsys.readouterr().err
    assert main(["estimate-memory", "--model", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["estimate-memory", "--model", "gemma-3-4b", "--seq-len", "400"]) == 2
    assert "raise --seq-len" in capsys.readouterr().err
    assert main(["estimate-memory", "--model", "gemma-3-4b", "--world-frames", "21"]) == 2
    assert "--world-frames 21" in capsys.readouterr().err
    assert main(["estimate-memory", "--model", "gemma-3-4b", "--stage", "align", "--lora"]) == 2
    assert "lora needs stage finetune or full" in capsys.readouterr().err


def test_checkpointed_align_and_finetune_carry_the_measured_gpu_caution(capsys):
    """The estimate is low for these on a GPU (BENCHMARKS.md): the CLI says so beside the figure."""
    for stage, caution in (("align", True), ("finetune", True), ("vision", False)):
        assert main(["estimate-memory", "--model", "google/gemma-3-4b-it", "--stage", stage, "--batch-size", "8",
                     "--seq-len", "1024", "--gradient-checkpointing"]) == 0  # fmt: skip
        assert ("caution: measured on an H200" in capsys.readouterr().out) is caution
    assert main(["estimate-memory", "--model", "google/gemma-3-4b-it", "--stage", "align"]) == 0
    assert "caution" not in capsys.readouterr().out
