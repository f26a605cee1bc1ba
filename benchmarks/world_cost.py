"""What the world fusion itself costs: world tokens vs the same number of plain text tokens.

One random TheWorld (Gemma 3 language model of hidden 512, 4 layers, 32k vocabulary) runs two
inputs of identical length:

- world: text, then `<start_of_world>` + N world placeholders + `<end_of_world>`, then text, with
  precomputed normalised latents as `world_latents` (the VAE is excluded: item 3 measures it);
- text: the same sequence with every world-block token replaced by an ordinary text token.

Timed in alternating pairs, for a forward (inference) and for an `align` training step (only the
world projector trains; loss by `supervised_lm_loss` on the same 32 supervised answer tokens).
For the text step to do the same work, its input embeddings require grad, so the backward runs
through the frozen language model to the embeddings, as the world step's backward does to reach
the projector; the world step also runs the projector backward and an AdamW step. What remains
between the two is the fusion: the projector, the scatter into the embeddings, the bidirectional
world-block mask. Target: world / text <= 1.05 for both.

Then a table of how both grow with tokens per frame (64 / 256 / 1024 at 512x512: 8x8, 4x4 and 2x2
space-to-depth of the 64x64 latent grid) and with frames (1 / 5 / 9 / 17 -> 1 / 2 / 3 / 5 latent
frames at 256 tokens each).

    .venv/bin/python benchmarks/world_cost.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    BOS_ID,
    DEFAULT_THREADS,
    END_OF_WORLD_ID,
    START_OF_WORLD_ID,
    WORLD_ID,
    Figure,
    LMSize,
    check,
    command_line,
    count_parameters,
    gemma_config,
    matmul_parameters,
    machine_description,
    paired_timing,
    random_text_ids,
    setup_cpu_threads,
    world_config,
    write_json,
)

TARGET = 1.05
IGNORE = -100


def build_model(size: LMSize, tokens_per_frame: int, image_size: int = 512, num_frames: int = 17, seed: int = 0):
    from theworld import TheWorld

    config = world_config(
        gemma_config(size),
        world_tokens_per_frame=tokens_per_frame,
        world_image_size=image_size,
        world_num_frames=num_frames,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = TheWorld(config)
    model.apply_freezing()  # as from_pretrained loads it: Gemma frozen, the world projector trained (stage align)
    return model


def make_inputs(model, frames: int, prefix: int, suffix: int, supervised: int, seed: int = 0) -> dict[str, Any]:
    """World and text inputs of identical length, shared labels, and matching world latents."""
    cfg = model.config
    vocab = cfg.text_config.vocab_size
    world_tokens = cfg.world_tokens_for_frames(frames)
    generator = torch.Generator().manual_seed(seed)
    head = torch.cat([torch.tensor([BOS_ID]), random_text_ids(generator, prefix, vocab)])
    tail = random_text_ids(generator, suffix, vocab)
    block = torch.tensor([START_OF_WORLD_ID] + [WORLD_ID] * world_tokens + [END_OF_WORLD_ID])
    world_ids = torch.cat([head, block, tail])[None]
    text_ids = torch.cat([head, random_text_ids(generator, block.numel(), vocab), tail])[None]
    labels = torch.full_like(world_ids, IGNORE)
    labels[:, -supervised:] = world_ids[:, -supervised:]
    side = cfg.world_image_size // cfg.world_spatial_compression
    latents = torch.randn(
        1, cfg.world_latent_channels, cfg.world_latent_frames(frames), side, side, generator=generator
    )
    return {
        "world_ids": world_ids,
        "text_ids": text_ids,
        "labels": labels,
        "latents": latents,
        "world_tokens": world_tokens,
        "seq_len": world_ids.shape[1],
    }


def step_functions(model, inputs: dict[str, Any], lr: float = 1e-4):
    """(forward_world, forward_text, train_world, train_text) closures over one model and input."""
    from theworld.training.loss import supervised_lm_loss

    projector_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(projector_params, lr=lr)
    embed = model.get_input_embeddings()
    world_ids, text_ids, labels, latents = inputs["world_ids"], inputs["text_ids"], inputs["labels"], inputs["latents"]

    def forward_world() -> None:
        model.eval()
        with torch.inference_mode():
            model(input_ids=world_ids, world_latents=latents)

    def forward_text() -> None:
        model.eval()
        with torch.inference_mode():
            model(input_ids=text_ids)

    def train_world() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = supervised_lm_loss(model, {"input_ids": world_ids, "world_latents": latents}, labels)
        loss.backward()
        optimizer.step()

    def train_text() -> None:
        model.train()
        # The same backward reach as the world step: through the frozen LM down to the embeddings.
        embeds = embed(text_ids).detach().requires_grad_(True)
        loss, _ = supervised_lm_loss(model, {"inputs_embeds": embeds}, labels)
        loss.backward()

    return forward_world, forward_text, train_world, train_text


def projector_seconds(model, latents: torch.Tensor, repeats: int = 10) -> dict[str, float]:
    """CPU-time medians of the projector alone: forward (inference), and forward + backward."""
    import statistics

    from common import time_call

    projector = model.world_projector

    def forward() -> None:
        with torch.inference_mode():
            projector(latents)

    def forward_backward() -> None:
        projector(latents).float().pow(2).mean().backward()

    out = {}
    for name, fn in (("forward_s", forward), ("forward_backward_s", forward_backward)):
        fn()
        out[name] = statistics.median(time_call(fn)[1] for _ in range(repeats))
    projector.zero_grad(set_to_none=True)
    return out


def measure(
    model,
    frames: int,
    prefix: int,
    suffix: int,
    supervised: int,
    forward_pairs: int,
    train_pairs: int,
    warmup: int,
) -> dict[str, Any]:
    inputs = make_inputs(model, frames, prefix, suffix, supervised)
    forward_world, forward_text, train_world, train_text = step_functions(model, inputs)
    forward = paired_timing(forward_text, forward_world, pairs=forward_pairs, warmup=warmup)
    train = paired_timing(train_text, train_world, pairs=train_pairs, warmup=warmup)
    model.train()
    return {
        "projector": projector_seconds(model, inputs["latents"]),
        "tokens_per_frame": model.config.world_tokens_per_frame,
        "frames": frames,
        "latent_frames": model.config.world_latent_frames(frames),
        "world_tokens": inputs["world_tokens"],
        "seq_len": inputs["seq_len"],
        "forward": forward.summary(),
        "forward_line": forward.describe("text", "world"),
        "train": train.summary(),
        "train_line": train.describe("text", "world"),
        "projector_parameters": count_parameters(model.world_projector),
    }


def projector_flop_share(model, world_tokens: int, seq_len: int) -> float:
    """Projector FLOPs (forward, backward, weight gradients: 6 per weight per token) as a share of an
    align step's matmul FLOPs (frozen LM: 2 forward + 2 backward per weight per token; attention and
    the LM head left out, so the share is if anything overstated)."""
    projector = 6.0 * matmul_parameters(model.world_projector) * world_tokens
    lm = 4.0 * matmul_parameters(model.model.language_model.layers) * seq_len
    return projector / (lm + projector)


def projector_flop_share_gemma3_4b(tokens_per_frame: int = 256, seq_len: int = 597) -> float:
    """The same share at gemma-3-4b's real size (meta device: no weights)."""
    from gpu_stage1 import gemma3_4b_config, world_config_for

    from theworld import TheWorld

    with torch.device("meta"):
        model = TheWorld(world_config_for(gemma3_4b_config(), tokens_per_frame, 512))
    return projector_flop_share(model, tokens_per_frame, seq_len)


def run(
    size: LMSize | None = None,
    seq_len: int = 512,
    tokens_per_frame: int = 256,
    forward_pairs: int = 30,
    train_pairs: int = 30,
    warmup: int = 2,
    sweep_tokens_per_frame: tuple[int, ...] = (64, 256, 1024),
    sweep_frames: tuple[int, ...] = (1, 5, 9, 17),
    sweep_forward_pairs: int = 4,
    sweep_train_pairs: int = 3,
    sweep_prefix: int = 64,
    sweep_suffix: int = 32,
    supervised: int = 32,
    image_size: int = 512,
) -> dict[str, Any]:
    size = size or LMSize()
    model = build_model(size, tokens_per_frame, image_size=image_size)
    suffix = 2 * supervised
    prefix = seq_len - 1 - (tokens_per_frame + 2) - suffix
    if prefix < 0:
        raise ValueError(f"seq_len={seq_len} is too short for {tokens_per_frame} world tokens and {suffix} answer tokens")
    headline = measure(model, 1, prefix, suffix, supervised, forward_pairs, train_pairs, warmup)
    headline["projector_flop_share"] = projector_flop_share(model, headline["world_tokens"], headline["seq_len"])

    rows: list[dict[str, Any]] = []
    configs = [(tpf, 1) for tpf in sweep_tokens_per_frame]
    configs += [(tokens_per_frame, f) for f in sweep_frames if (tokens_per_frame, f) not in configs]
    models = {tokens_per_frame: model}
    for tpf, frames in configs:
        if tpf not in models:
            models[tpf] = build_model(size, tpf, image_size=image_size)
        rows.append(
            measure(models[tpf], frames, sweep_prefix, sweep_suffix, min(supervised, sweep_suffix),
                    sweep_forward_pairs, sweep_train_pairs, warmup=1)
        )
    return {
        "headline": headline,
        "sweep": rows,
        "size": vars(size),
        "image_size": image_size,
        "lm_parameters": count_parameters(model) - count_parameters(model.world_projector),
    }


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the sweep (CPU-time medians in ms and world/text ratios)."""
    lines = [
        "| tokens/frame | frames | latent frames | world tokens | seq len | forward world ms | forward text ms "
        "| forward ratio | train world ms | train text ms | train ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f, t = r["forward"][r["forward"]["clock"]], r["train"][r["train"]["clock"]]
        lines.append(
            f"| {r['tokens_per_frame']} | {r['frames']} | {r['latent_frames']} | {r['world_tokens']} | {r['seq_len']} "
            f"| {f['median_s_b'] * 1e3:.0f} | {f['median_s_a'] * 1e3:.0f} | {f['ratio_median']:.3f} "
            f"| {t['median_s_b'] * 1e3:.0f} | {t['median_s_a'] * 1e3:.0f} | {t['ratio_median']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--tokens-per-frame", type=int, default=256)
    parser.add_argument("--forward-pairs", type=int, default=30)
    parser.add_argument("--train-pairs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sweep-tokens-per-frame", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--sweep-frames", type=int, nargs="*", default=[1, 5, 9, 17])
    parser.add_argument("--sweep-forward-pairs", type=int, default=4)
    parser.add_argument("--sweep-train-pairs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="write the results here (used by run_all.py)")
    args = parser.parse_args(argv)
    setup_cpu_threads(args.threads)

    size = LMSize(hidden_size=args.hidden, num_hidden_layers=args.layers, vocab_size=args.vocab,
                  intermediate_size=4 * args.hidden)
    result = run(
        size,
        seq_len=args.seq_len,
        tokens_per_frame=args.tokens_per_frame,
        forward_pairs=args.forward_pairs,
        train_pairs=args.train_pairs,
        warmup=args.warmup,
        sweep_tokens_per_frame=tuple(args.sweep_tokens_per_frame),
        sweep_frames=tuple(args.sweep_frames),
        sweep_forward_pairs=args.sweep_forward_pairs,
        sweep_train_pairs=args.sweep_train_pairs,
    )
    head = result["headline"]
    command = command_line(argv=argv)
    shape = f"{head['world_tokens']} world tokens in {head['seq_len']} (1 frame, {head['tokens_per_frame']}/frame)"
    figures = []
    for key, label in (("forward", "forward"), ("train", "align train step")):
        ratio = head[key][head[key]["clock"]]["ratio_median"]
        figures.append(
            Figure(
                name=f"world / text {label} time, {shape}",
                value=ratio,
                target=f"<= {TARGET}",
                passed=check(ratio, "<=", TARGET),
                command=command,
                details={k: head[k] for k in ("seq_len", "world_tokens", key)},
                note=head[f"{key}_line"],
            )
        )
    proj = head["projector"]
    text_forward = head["forward"][head["forward"]["clock"]]["median_s_a"]
    text_train = head["train"][head["train"]["clock"]]["median_s_a"]
    parts = (f"projector alone ({head['projector_parameters'] / 1e3:.0f}k params): forward "
             f"{proj['forward_s'] * 1e3:.1f} ms = {100 * proj['forward_s'] / text_forward:.1f}% of a text forward, "
             f"forward+backward {proj['forward_backward_s'] * 1e3:.1f} ms = "
             f"{100 * proj['forward_backward_s'] / text_train:.1f}% of a text train step")
    parts += (f"; by FLOPs the projector is {100 * head['projector_flop_share']:.2f}% of this model's align step "
              f"(4 layers of hidden {args.hidden}), {100 * projector_flop_share_gemma3_4b(args.tokens_per_frame):.2f}% "
              f"at gemma-3-4b's size (34 layers of 2560, 597 tokens), so the fusion's share shrinks at real scale")
    for figure in figures:
        figure.note += "; " + parts
        print(figure.line())
        print("  " + figure.note)
    table = sweep_table(result["sweep"])
    print("\nGrowth with tokens per frame and frames (CPU-time medians; ratio = world / text):")
    print(table)
    write_json(args.json, {"figures": figures, "sweep": result["sweep"], "sweep_table": table,
                           "result": result, "machine": machine_description()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
