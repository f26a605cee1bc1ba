"""Choice scoring: each prompt computed once (prefill, then the choices from its KV cache), against
one full forward per choice as scoring worked before.

The figure: the time of scoring N two-choice items (`theworld.evaluation.scoring.score_continuations`)
divided by the time of one forward of the same N prompts, the least any scorer must compute
(target <= 1.3). One full forward of prompt + choice per row (`theworld.testing.reference.
full_forward_scores`, the old path, kept as the yardstick) is about 2 by construction. Both are
timed in alternating pairs against the prompt forwards in the same run, and their items/s given;
their scores are compared (float32: the same to ~1e-6).

Items are BLINK-sized: Gemma's image block of 256 tokens (SigLIP runs), one world frame of 256
world tokens (latents given, as the harness passes them after encoding each item once on either
path), 40 to 60 text tokens, two 3-token choices ("(A)", "(B)"): about 590 tokens per prompt.
Random weights (timing does not depend on them).

    .venv/bin/python benchmarks/choice_scoring.py                    # CPU, a small random model
    .venv/bin/python benchmarks/choice_scoring.py --size gemma-3-4b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    DEFAULT_THREADS,
    Figure,
    check,
    command_line,
    machine_description,
    paired_timing,
    setup_cpu_threads,
    write_json,
)

TARGET = 1.3
SIZES = ("small", "tiny", "gemma-3-4b")
PAD, EOS, BOS = 0, 1, 2


def gemma_config(size: str):
    """gemma-3-4b's config (written out in `theworld.memory.configs`), or a small one with the same layout."""
    from transformers import Gemma3Config

    from theworld.memory.configs import gemma3_4b_config

    if size == "gemma-3-4b":
        return gemma3_4b_config()
    small = size == "small"
    layers = 4 if small else 2
    text = dict(
        vocab_size=32_000 if small else 1024, hidden_size=512 if small else 64, intermediate_size=2048 if small else 128,
        num_hidden_layers=layers, num_attention_heads=8 if small else 4, num_key_value_heads=4 if small else 2,
        head_dim=64 if small else 16, query_pre_attn_scalar=64 if small else 16, sliding_window=1024 if small else 64,
        layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"], max_position_embeddings=8192,
        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS,
    )  # fmt: skip
    # 64 px / 4 px patches = 16 x 16 patches -> 256 image tokens, as Gemma's 896 / 14 = 64 x 64 pooled 4 x 4.
    vision = dict(model_type="siglip_vision_model", hidden_size=64 if small else 32, intermediate_size=128 if small else 64,
                  num_hidden_layers=1, num_attention_heads=2, image_size=64 if small else 16, patch_size=4,
                  vision_use_head=False)  # fmt: skip
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256 if small else 16,
                        boi_token_index=20, eoi_token_index=21, image_token_index=22, pad_token_id=PAD,
                        bos_token_id=BOS, eos_token_id=EOS)  # fmt: skip


def build_model(size: str, device: torch.device, dtype: torch.dtype, attn_implementation: str = "sdpa"):
    """Random TheWorld with the world path on (no VAE: latents are given), in eval mode."""
    from theworld import TheWorld, TheWorldConfig
    from theworld.memory.configs import WORLD_MARKER_IDS

    base = gemma_config(size)
    # 512 px -> 64 x 64 latents -> 256 tokens (gemma-3-4b); 128 px -> 16 x 16 -> 256 tokens (small).
    world = dict(world_image_size={"gemma-3-4b": 512, "small": 128, "tiny": 32}[size],
                 world_tokens_per_frame=16 if size == "tiny" else 256)  # fmt: skip
    config = TheWorldConfig.from_gemma_config(base, **world, **WORLD_MARKER_IDS)
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    with torch.device(device):
        model = TheWorld._from_config(config, dtype=dtype)
    with torch.no_grad():  # Gemma zero-initialises it: give the image a say, as trained weights do
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.02)
    return model.eval().requires_grad_(False)


def make_items(model, n: int, seed: int = 0) -> tuple[list, list[tuple[int, list[int]]]]:
    """N BLINK-like prompts (`EncodedPrompt`) of 3 lengths and their two 3-token choices (rows)."""
    from theworld.evaluation.scoring import EncodedPrompt

    cfg = model.config
    vision = cfg.vision_config
    side = cfg.world_image_size // cfg.world_spatial_compression
    generator = torch.Generator().manual_seed(seed)
    specials = {cfg.boi_token_index, cfg.eoi_token_index, cfg.image_token_id}
    # Text ids clear of the special ones: below gemma-3-4b's image ids (~256k), above the small models' (< 100).
    low, high = 100, min(min(specials), cfg.text_config.vocab_size) if min(specials) > 1000 else cfg.text_config.vocab_size

    def words(k: int) -> list[int]:
        return torch.randint(low, high, (k,), generator=generator).tolist()

    prompts, rows = [], []
    choices = [words(3), words(3)]  # "(A)" and "(B)": the same two continuations for every item, as in BLINK
    for i in range(n):
        ids = (
            [BOS] + words(8)
            + [cfg.start_of_world_token_id] + [cfg.world_token_id] * cfg.world_tokens_per_frame + [cfg.end_of_world_token_id]
            + [cfg.boi_token_index] + [cfg.image_token_id] * cfg.mm_tokens_per_image + [cfg.eoi_token_index]
            + words(26 + 10 * (i % 3)) + words(4)
        )  # fmt: skip
        input_ids = torch.tensor(ids)
        prompts.append(EncodedPrompt(
            id=f"item{i}",
            input_ids=input_ids,
            token_type_ids=(input_ids == cfg.image_token_id).long(),
            pixel_values=torch.rand(1, 3, vision.image_size, vision.image_size, generator=generator) * 2 - 1,
            world=torch.randn(1, cfg.world_latent_channels, 1, side, side, generator=generator),
            world_key="world_latents",
        ))  # fmt: skip
        rows += [(i, list(c)) for c in choices]
    return prompts, rows


def prompt_groups(n_items: int, rows_per_item: int, batch_size: int) -> list[list[int]]:
    """The items prefilled together, as `score_continuations` groups them."""
    per = max(1, batch_size // rows_per_item)
    return [list(range(s, min(s + per, n_items))) for s in range(0, n_items, per)]


def flops_per_item(model, prompt_tokens: float, continuation_tokens: int, choices: int) -> float:
    """Model FLOPs of scoring one item on the prefill path: 2 x matmul weights x tokens, plus attention
    (full square, no causal discount, window for local layers), SigLIP, the projector, the kept logits."""
    from gpu_stage1 import attention_flops
    from common import matmul_parameters

    cfg = model.config
    text, vision = cfg.text_config, cfg.vision_config
    n_lm = matmul_parameters(model.model.language_model.layers)
    attn = attention_flops(1, int(prompt_tokens), text.layer_types, text.sliding_window, text.num_attention_heads, text.head_dim)
    patches = (vision.image_size // vision.patch_size) ** 2
    vis_attn = attention_flops(1, patches, ["full_attention"] * vision.num_hidden_layers, None, vision.num_attention_heads,
                               vision.hidden_size // vision.num_attention_heads)  # fmt: skip
    siglip = 2.0 * matmul_parameters(model.model.vision_tower) * patches + vis_attn
    siglip += 2.0 * model.model.multi_modal_projector.mm_input_projection_weight.numel() * cfg.mm_tokens_per_image
    projector = 2.0 * matmul_parameters(model.world_projector) * cfg.world_tokens_per_frame
    head = 2.0 * text.hidden_size * text.vocab_size * (1 + choices * (continuation_tokens - 1))
    continuation = choices * (continuation_tokens - 1) * (2.0 * n_lm + 4.0 * prompt_tokens * text.num_attention_heads * text.head_dim * len(text.layer_types))
    return 2.0 * n_lm * prompt_tokens + attn + siglip + projector + head + continuation


def run(
    size: str = "small",
    n_items: int = 8,
    batch_size: int = 16,
    pairs: int = 6,
    old_pairs: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    peak_tflops: float | None = None,
) -> dict[str, Any]:
    from theworld.evaluation.scoring import collate, score_continuations
    from theworld.testing.reference import full_forward_scores

    dev, torch_dtype = torch.device(device), getattr(torch, dtype)
    start = time.perf_counter()
    model = build_model(size, dev, torch_dtype, attn_implementation)
    build_s = time.perf_counter() - start
    prompts, rows = make_items(model, n_items)
    rows_per_item = len(rows) // n_items
    groups = prompt_groups(n_items, rows_per_item, batch_size)

    def prompt_forwards() -> None:  # the baseline: each prompt once, no choice scored
        for group in groups:
            inputs, _ = collate(model, prompts, [(p, ()) for p in group], "left", PAD)
            with torch.no_grad():
                model(**inputs, use_cache=False, logits_to_keep=1)

    def prefilled() -> list[float]:
        return score_continuations(model, prompts, rows, batch_size=batch_size, pad_token_id=PAD)

    def full_forwards() -> list[float]:
        return full_forward_scores(model, prompts, rows, batch_size=batch_size, pad_token_id=PAD)

    new_scores, old_scores = prefilled(), full_forwards()
    max_diff = max(abs(a - b) for a, b in zip(new_scores, old_scores))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    new = paired_timing(prompt_forwards, prefilled, pairs=pairs, warmup=warmup, device=dev)
    peak_new = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    old = paired_timing(prompt_forwards, full_forwards, pairs=old_pairs, warmup=0, device=dev)
    prompt_tokens = statistics.mean(len(p) for p in prompts)
    clock = new.clock
    new_s, old_s = new.median("b"), old.median("b")
    flops = flops_per_item(model, prompt_tokens, len(rows[0][1]), rows_per_item) * n_items
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    if peak_tflops:
        peak = peak_tflops * 1e12
    elif dev.type == "cuda":
        from gpu_stage1 import peak_flops_for

        peak = peak_flops_for(device_name)
    else:
        peak = None
    return {
        "size": size,
        "device": device_name,
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "n_items": n_items,
        "choices_per_item": rows_per_item,
        "batch_size": batch_size,
        "prompt_tokens_mean": prompt_tokens,
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_s": build_s,
        "clock": clock,
        "ratio_prefilled": new.ratio(),
        "ratio_prefilled_iqr": new.ratio_iqr(),
        "ratio_full_forwards": old.ratio(),
        "ratio_full_forwards_iqr": old.ratio_iqr(),
        "ratio_prefilled_wall": new.ratio("wall"),
        "ratio_full_forwards_wall": old.ratio("wall"),
        "items_per_s_prefilled": n_items / new_s,
        "items_per_s_full_forwards": n_items / old_s,
        "items_per_s_prompt_forwards": n_items / new.median("a"),
        "speedup": old_s / new_s,
        "prompt_tokens_per_s": n_items * prompt_tokens / new_s,
        "flops_per_item": flops / n_items,
        "mfu": flops / (new.median("b", "wall") * peak) if peak else None,
        "peak_flops": peak,
        "peak_allocated_bytes": peak_new,
        "max_score_difference": max_diff,
        "timing_prefilled": new.summary(),
        "timing_full_forwards": old.summary(),
    }


def figures(result: dict[str, Any], command: str) -> list[Figure]:
    r = result
    shape = (f"{r['n_items']} two-choice items of ~{r['prompt_tokens_mean']:.0f} tokens (256 image + 256 world "
             f"tokens), {r['size']} random model, {r['dtype']}, {r['attn_implementation']}, {r['batch_size']} rows "
             "per forward")  # fmt: skip
    lo, hi = r["ratio_prefilled_iqr"]
    old_lo, old_hi = r["ratio_full_forwards_iqr"]
    return [
        Figure(
            name="choice scoring / forwards of the same prompts: each prompt once, choices from its cache",
            value=r["ratio_prefilled"], target=f"<= {TARGET}", passed=check(r["ratio_prefilled"], "<=", TARGET),
            command=command,
            note=(f"ratio {r['ratio_prefilled']:.3f} = median of {r['timing_prefilled']['pairs']} interleaved pairs "
                  f"({r['clock']} time), IQR {lo:.3f}-{hi:.3f}, wall-time ratio {r['ratio_prefilled_wall']:.3f}; "
                  f"{r['items_per_s_prefilled']:.2f} items/s against {r['items_per_s_full_forwards']:.2f} items/s "
                  f"with one full forward per choice ({r['speedup']:.2f}x); scores equal to "
                  f"{r['max_score_difference']:.1e}; {shape}"),
        ),  # fmt: skip
        Figure(
            name="choice scoring / forwards of the same prompts: one full forward per choice (before)",
            value=r["ratio_full_forwards"], target="n/a (the old path, for comparison)", passed=None, command=command,
            note=(f"ratio {r['ratio_full_forwards']:.3f} = median of {r['timing_full_forwards']['pairs']} interleaved "
                  f"pairs, IQR {old_lo:.3f}-{old_hi:.3f}, wall-time ratio {r['ratio_full_forwards_wall']:.3f}; "
                  f"`theworld.testing.reference.full_forward_scores`; {shape}"),
        ),  # fmt: skip
    ]


def format_result(r: dict[str, Any]) -> str:
    gib = "n/a" if r["peak_allocated_bytes"] is None else f"{r['peak_allocated_bytes'] / 2**30:.1f} GiB"
    mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    return (
        f"{r['n_items']} items x {r['choices_per_item']} choices, ~{r['prompt_tokens_mean']:.0f} prompt tokens, "
        f"{r['size']} ({r['parameters']:,} parameters) on {r['device']}, {r['dtype']}, {r['attn_implementation']}\n"
        f"  prefilled / prompt forwards: {r['ratio_prefilled']:.3f} (target <= {TARGET}); full forwards per choice: "
        f"{r['ratio_full_forwards']:.3f}\n"
        f"  items/s: prefilled {r['items_per_s_prefilled']:.2f}, full forwards {r['items_per_s_full_forwards']:.2f}, "
        f"prompt forwards alone {r['items_per_s_prompt_forwards']:.2f}; prompt tokens/s {r['prompt_tokens_per_s']:,.0f}\n"
        f"  MFU {mfu}, peak allocated {gib}, max score difference {r['max_score_difference']:.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward (default 16: 8 items)")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--old-pairs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--attn-implementation", default="sdpa", choices=("sdpa", "eager"))
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    setup_cpu_threads(args.threads)
    result = run(args.size, args.items, args.batch_size, args.pairs, args.old_pairs, args.warmup, args.device, args.dtype,
                 args.attn_implementation, args.peak_tflops)  # fmt: skip
    command = command_line(argv=argv)
    figs = figures(result, command)
    print(format_result(result))
    for fig in figs:
        print(fig.line())
    write_json(args.json, {"figures": figs, "result": result, "machine": machine_description()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
