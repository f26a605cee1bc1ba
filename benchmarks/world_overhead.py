"""What TheWorld costs when the world is off: TheWorld(enable_world=False) vs Gemma 3, forward.

Both models are loaded with `from_pretrained` from one saved random Gemma 3 checkpoint (sizes
chosen so a forward is real compute: hidden 512, 4 layers, 32k vocabulary, 512 tokens), same
dtype, same attention implementation, same inputs. The logits are checked to be identical, then
the two forwards are timed in alternating pairs; the figure is the median time ratio
TheWorld / Gemma 3 (target <= 1.01).

    .venv/bin/python benchmarks/world_overhead.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    BOS_ID,
    DEFAULT_THREADS,
    Figure,
    LMSize,
    check,
    command_line,
    gemma_config,
    machine_description,
    paired_timing,
    random_text_ids,
    setup_cpu_threads,
    write_json,
)

TARGET = 1.01


def run(
    size: LMSize | None = None,
    seq_len: int = 512,
    batch: int = 1,
    pairs: int = 30,
    warmup: int = 3,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> dict[str, Any]:
    """Load both models from one checkpoint, check equal logits, time forwards in pairs."""
    from transformers import Gemma3ForConditionalGeneration

    from theworld import TheWorld

    size = size or LMSize()
    config = gemma_config(size)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="world_overhead_") as tmp:
        Gemma3ForConditionalGeneration(config).save_pretrained(tmp)
        load = dict(dtype=dtype, attn_implementation=attn_implementation)
        gemma = Gemma3ForConditionalGeneration.from_pretrained(tmp, **load).eval()
        world = TheWorld.from_pretrained(tmp, enable_world=False, **load).eval()

    generator = torch.Generator().manual_seed(seed)
    ids = torch.stack([random_text_ids(generator, seq_len, size.vocab_size) for _ in range(batch)])
    ids[:, 0] = BOS_ID
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    with torch.inference_mode():
        same = torch.equal(gemma(**inputs).logits, world(**inputs).logits)

    def forward_gemma() -> None:
        with torch.inference_mode():
            gemma(**inputs)

    def forward_world() -> None:
        with torch.inference_mode():
            world(**inputs)

    timing = paired_timing(forward_gemma, forward_world, pairs=pairs, warmup=warmup)
    return {
        "ratio": timing.ratio(),
        "timing": timing.summary(),
        "timing_line": timing.describe("Gemma", "TheWorld"),
        "logits_identical": same,
        "seq_len": seq_len,
        "batch": batch,
        "dtype": str(dtype).replace("torch.", ""),
        "attn_implementation": attn_implementation,
        "size": vars(size),
        "parameters": sum(p.numel() for p in gemma.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=30, help="timed (Gemma, TheWorld) pairs")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="write the results here (used by run_all.py)")
    args = parser.parse_args(argv)
    setup_cpu_threads(args.threads)

    size = LMSize(hidden_size=args.hidden, num_hidden_layers=args.layers, vocab_size=args.vocab,
                  intermediate_size=4 * args.hidden)
    result = run(size, seq_len=args.seq_len, batch=args.batch, pairs=args.pairs, warmup=args.warmup,
                 dtype=getattr(torch, args.dtype))
    figure = Figure(
        name="TheWorld(enable_world=False) / Gemma 3 forward time",
        value=result["ratio"],
        target=f"<= {TARGET}",
        passed=check(result["ratio"], "<=", TARGET) and result["logits_identical"],
        command=command_line(argv=argv),
        details=result,
        note=(f"{result['timing_line']}; one forward of {result['batch']}x{result['seq_len']} tokens, "
              f"{result['parameters'] / 1e6:.0f}M params, {result['dtype']}, {result['attn_implementation']}; "
              f"logits identical: {result['logits_identical']}"),
    )
    print(figure.line())
    print("  " + figure.note)
    write_json(args.json, {"figures": [figure], "machine": machine_description()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
