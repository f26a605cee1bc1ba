"""Smoke tests of the benchmark scripts: each core function runs at a tiny size and returns
well-formed numbers. No timing is asserted (these machines are shared); only shapes, signs,
structure, and figures that are exact by construction (memory ratios, parameter counts)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import common  # noqa: E402
import gpu_stage1  # noqa: E402
import loss_memory  # noqa: E402
import memory_estimate  # noqa: E402
import run_all  # noqa: E402
import world_cost  # noqa: E402
import world_overhead  # noqa: E402

TINY = common.LMSize(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                     intermediate_size=64, vocab_size=512, sliding_window=32)


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_paired_timing_alternates_and_summarises():
    calls = []
    timing = common.paired_timing(lambda: calls.append("a"), lambda: calls.append("b"), pairs=4, warmup=1)
    assert calls[:2] == ["a", "b"]  # warm-up
    assert calls[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # alternating order
    summary = timing.summary()
    assert summary["pairs"] == 4 and summary["clock"] == "cpu"
    assert set(summary["cpu"]) >= {"ratio_median", "ratio_q25", "ratio_q75", "median_s_a", "median_s_b"}
    assert "interleaved pairs" in timing.describe()


def test_command_line_drops_json_plumbing():
    cmd = common.command_line("benchmarks/world_cost.py", ["--pairs", "3", "--json", "/tmp/x.json"])
    assert cmd == ".venv/bin/python benchmarks/world_cost.py --pairs 3"


def test_world_overhead_runs_tiny():
    result = world_overhead.run(TINY, seq_len=16, pairs=2, warmup=0)
    assert result["logits_identical"] is True
    assert positive(result["ratio"])
    assert result["timing"]["pairs"] == 2


def test_world_cost_runs_tiny():
    result = world_cost.run(
        TINY, seq_len=64, tokens_per_frame=16, forward_pairs=1, train_pairs=1, warmup=0,
        sweep_tokens_per_frame=(4, 16), sweep_frames=(1, 5), sweep_forward_pairs=1, sweep_train_pairs=1,
        sweep_prefix=4, sweep_suffix=4, supervised=4, image_size=64,
    )  # fmt: skip
    head = result["headline"]
    assert head["seq_len"] == 64 and head["world_tokens"] == 16
    for key in ("forward", "train"):
        assert positive(head[key]["cpu"]["ratio_median"])
    assert positive(head["projector"]["forward_backward_s"])
    rows = result["sweep"]
    assert [(r["tokens_per_frame"], r["frames"]) for r in rows] == [(4, 1), (16, 1), (16, 5)]
    assert [r["world_tokens"] for r in rows] == [4, 16, 32]  # 5 frames -> 2 latent frames
    table = world_cost.sweep_table(rows)
    assert len(table.splitlines()) == 2 + len(rows)


def test_world_cost_inputs_have_equal_length_and_one_world_block():
    model = world_cost.build_model(TINY, 16, image_size=64)
    # The world step's optimizer takes the trainable parameters: the projector only, as in stage align.
    assert {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad} == {"world_projector"}
    inputs = world_cost.make_inputs(model, frames=5, prefix=3, suffix=6, supervised=2)
    assert inputs["world_ids"].shape == inputs["text_ids"].shape
    assert int((inputs["world_ids"] == common.WORLD_ID).sum()) == 32
    assert int((inputs["text_ids"] == common.WORLD_ID).sum()) == 0
    assert int((inputs["labels"] != -100).sum()) == 2
    assert inputs["latents"].shape == (1, 16, 2, 8, 8)


def test_loss_memory_measures_both_variants_in_process():
    size = common.LMSize(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=16, intermediate_size=64, vocab_size=8192, sliding_window=64)
    result = loss_memory.run(size, seq_len=64, supervised=4, dtype="float32", subprocesses=False)
    assert result["losses_agree"]
    gemma, ours = result["variants"]["gemma"], result["variants"]["supervised"]
    assert gemma["allocator_peak_bytes"] > ours["allocator_peak_bytes"] > 0
    # Gemma's step holds at least the full fp32 logits; ours far less.
    assert gemma["allocator_peak_bytes"] >= result["full_logits_fp32_bytes"]
    assert result["ratio"] > 1.0


def test_profiler_peak_sees_a_known_allocation():
    def allocate():
        a = torch.ones(4_000_000, dtype=torch.uint8)
        b = torch.ones(1_000_000, dtype=torch.uint8)
        del a, b

    peak, _ = loss_memory.profiler_peak_bytes(allocate)
    assert 5_000_000 <= peak < 5_100_000


def test_gpu_stage1_dry_run_on_cpu():
    result = gpu_stage1.run(dry_run=True, batch=1, image_size=64, tokens_per_frame=16, steps=1, warmup=1)
    assert result["dry_run"] and result["batch"] == 1
    assert positive(result["tokens_per_s"]) and positive(result["step_s_median"])
    assert 0 < result["parameters_trainable"] < result["parameters_total"]  # only the projector trains
    assert all(v > 0 for v in result["flops"].values())
    assert result["flops_counted_step"] > 0
    assert result["mfu"] is None  # no peak FLOP/s for a CPU
    assert all(math.isfinite(loss) for loss in result["losses"])
    assert "DRY RUN" in gpu_stage1.format_run(result)


def test_gpu_stage1_parameter_counts_at_gemma3_4b_size():
    counts = gpu_stage1.parameter_counts()
    assert counts["gemma3_4b_total"] == 4_300_079_472  # the model card's 4.3B
    assert counts["gemma3_4b_embedding"] == 262_208 * 2560
    # mlp: 256 -> 2560 -> 2560 with biases, a 5-row temporal embedding (17 frames), one output scale
    assert counts["projector_default"] == (256 * 2560 + 2560) + (2560 * 2560 + 2560) + 5 * 2560 + 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_stage1_without_gpu_fails_with_a_clear_message():
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu_stage1.run(dry_run=False)


def test_run_all_reads_cache_vs_vae_lines_and_writes_markdown(tmp_path, monkeypatch):
    line = ("full-size Cosmos VAE, 512x512, small LM, batch 1: cached latents 41.5x faster per align step "
            "(VAE in the loop 12.000 s, cached 0.2890 s, median; 1 image(s), 300 tokens)")
    match = run_all.CACHE_LINE.search("noise\n" + line + "\nmore")
    assert match and float(match["speedup"]) == 41.5 and "full-size" in match["label"]

    fig = common.Figure(name="f", value=1.002, target="<= 1.01", passed=True, command="cmd", note="n")
    results = {
        "world_overhead": {"figures": [vars(fig)]},
        "cache_vs_vae": {"missing": True},
        "gpu_stage1": {"parameter_counts": gpu_stage1.parameter_counts()},
    }
    out = tmp_path / "B.md"
    machine = common.machine_description()
    run_all.write_markdown(out, results, machine, 60.0, ["--output", "B.md"])
    text = out.read_text()
    assert "| 1 | f | 1.002x | <= 1.01 | PASS | `cmd` |" in text
    assert "TODO" in text and "cache_vs_vae.py" in text
    assert "Not run on its own on a GPU yet" in text and "benchmarks/gpu_stage1.py" in text
    assert "7,226,881" in text
    # What a lent GPU measured is kept in benchmarks/gpu_results/ and survives a CPU-only rewrite...
    assert "| eval sdpa |" in text and "H200" in text
    # ...and without it the section says how to measure it.
    monkeypatch.setattr(run_all, "GPU_RESULTS", tmp_path / "none")
    run_all.write_markdown(out, results, machine, 60.0, ["--output", "B.md"])
    assert "**Not run on a GPU yet.**" in out.read_text() and "| eval sdpa |" not in out.read_text()


def test_rollout_cost_counts_match_the_formula_and_guidance_doubles_the_dit():
    import rollout_cost

    from theworld.testing.tiny_world_model import TinyDiTSpec

    dit = dict(TinyDiTSpec().transformer_config(text_embed_dim=32), concat_padding_mask=True)  # counted as 18 channels
    vae = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1)
    rows = rollout_cost.rollout_costs(dit, vae, image_size=64, observed_frames=5, rollout_frames=(1, 2), steps=3,
                                      text_tokens=16)  # fmt: skip
    assert [r["K"] for r in rows] == [1, 2] and [r["latent_frames"] for r in rows] == [3, 4]
    assert [r["tokens"] for r in rows] == [3 * 16, 4 * 16]  # 64 px -> 8x8 latents -> 4x4 patches
    for r in rows:
        assert r["dit_forward_tflops"] == pytest.approx(r["dit_forward_analytic_tflops"], rel=1e-6)
        dit_part = r["rollout_no_guidance_tflops"] - r["vae_encode_tflops"]
        assert r["rollout_guidance_tflops"] - r["vae_encode_tflops"] == pytest.approx(2 * dit_part)
        assert positive(r["vae_encode_tflops"])
    assert rows[1]["dit_forward_tflops"] > rows[0]["dit_forward_tflops"]
    assert len(rollout_cost.table(rows, 3).splitlines()) == 2 + len(rows)


def test_memory_estimate_writes_the_gemma_table_and_the_validation(tmp_path, monkeypatch):
    """The four configurations from gemma-3-4b's config, one validation case measured, BENCHMARKS.md's section."""
    import json

    gemma = memory_estimate.gemma3_4b_estimates()
    assert [r["stage"] for r in gemma] == ["align", "vision", "finetune", "full"]
    assert all(r["checkpointing"]["peak_bytes"] < r["plain"]["peak_bytes"] for r in gemma)
    validation = memory_estimate.validate_on_cpu(["vision bf16 checkpointing b4x192"])
    assert abs(validation[0]["ratio"] - 1) <= memory_estimate.TOLERANCE
    # through JSON, as run_all reads it
    result = json.loads(json.dumps({"gemma3_4b": gemma, "validation": validation, "machine": {"cpu": "x"}}))
    text = "\n".join(run_all.memory_section(result))
    for stage, documented in (("align", "~20-24 GB"), ("vision", "~35-40 GB"), ("finetune", "~56-60 GB"), ("full", "~80 GB+")):
        assert f"`{stage}`" in text and documented in text
    assert "vision bf16 checkpointing b4x192" in text
    assert "H200" in text and "| projection only (default) (align) | 44.5 | 45.1 | 0.986 |" in text  # gpu_results/
    monkeypatch.setattr(run_all, "GPU_RESULTS", tmp_path)  # no GPU results kept: the command that makes them
    text = "\n".join(run_all.memory_section(result))
    assert "Not measured on a GPU yet" in text and "memory_estimate.py --device cuda" in text
def test_serve_throughput_workload_mixes_images_and_clips(tmp_path):
    import serve_throughput

    bodies = serve_throughput.request_bodies(8, max_tokens=5, workdir=tmp_path, clip_every=4)
    kinds = [body["messages"][0]["content"][0]["type"] for body in bodies]
    assert kinds == ["image_url", "image_url", "image_url", "video_url"] * 2
    assert bodies[3]["messages"][0]["content"][0] != bodies[7]["messages"][0]["content"][0]  # clips of 5 and 9 frames
    assert len({body["messages"][0]["content"][1]["text"] for body in bodies}) == 8
    assert all(body["max_tokens"] == 5 and body["temperature"] == 0 for body in bodies)


def test_choice_scoring_runs_tiny_and_scores_like_the_old_path():
    import choice_scoring

    result = choice_scoring.run(size="tiny", n_items=3, batch_size=4, pairs=1, old_pairs=1, warmup=0)
    assert result["choices_per_item"] == 2 and result["n_items"] == 3
    assert result["max_score_difference"] < 1e-4  # the same scores as one full forward per choice
    assert positive(result["ratio_prefilled"]) and positive(result["ratio_full_forwards"])
    assert positive(result["items_per_s_prefilled"]) and result["mfu"] is None  # no peak FLOP/s for a CPU
    assert result["flops_per_item"] > 0
    figs = choice_scoring.figures(result, "cmd")
    assert [f.target for f in figs] == ["<= 1.3", "n/a (the old path, for comparison)"]
    assert choice_scoring.prompt_groups(5, 2, 4) == [[0, 1], [2, 3], [4]]


def test_gpu_benchmark_dry_run_records_each_part_and_its_markdown(tmp_path):
    import json

    import gpu_benchmark

    parts = ["train sdpa, gradient checkpointing", "eval eager"]  # in the script's order
    out, md = tmp_path / "gpu.json", tmp_path / "gpu.md"
    assert gpu_benchmark.main(["--dry-run", "--only", *parts, "--json", str(out), "--markdown", str(md)]) == 0
    results = json.loads(out.read_text())["parts"]
    assert [r["part"] for r in results] == parts and all(r["status"] == "ok" for r in results)
    assert results[0]["result"]["gradient_checkpointing"] and results[1]["result"]["attn_implementation"] == "eager"
    rows = [line for line in md.read_text().splitlines() if line.startswith(("| eval", "| train"))]
    assert len(rows) == 2 and "images/s" in rows[0] and "items/s" in rows[1]

    # A spent budget skips what is left, and says so.
    assert gpu_benchmark.main(["--dry-run", "--budget-s", "0", "--only", "eval sdpa", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["parts"][0]["status"].startswith("skipped: time budget spent")


def test_cache_throughput_reads_the_line_cache_latents_prints():
    import cache_throughput

    line = ("throughput: 12.50 images/s over 2 process(es) (16 in 1.3 s; the VAE alone 7.10 images/s per process, "
            "batches of 8 on cpu)")  # fmt: skip
    match = cache_throughput.THROUGHPUT.search(line)
    assert match and float(match["rate"]) == 12.5 and match["procs"] == "2" and float(match["vae"]) == 7.1
def test_rollout_cost_section_of_benchmarks_md():
    import rollout_cost

    from theworld.testing.tiny_world_model import TinyDiTSpec

    dit = dict(TinyDiTSpec().transformer_config(text_embed_dim=32), concat_padding_mask=True)
    vae = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1)
    rows = rollout_cost.rollout_costs(dit, vae, image_size=64, observed_frames=1, rollout_frames=(1,), steps=2, text_tokens=16)
    text = "\n".join(run_all.rollout_cost_section({"rows": rows, "steps": 2, "image_size": 64, "observed_frames": 1}))
    assert "World rollouts: FLOPs" in text and "| 1 | 2 | 32 |" in text
    assert "did not run" in "\n".join(run_all.rollout_cost_section({"error": "boom"}))
    assert "### Time and memory on a GPU" in text and "| 2 | 3 | 59.9 ms |" in text  # benchmarks/gpu_results/

