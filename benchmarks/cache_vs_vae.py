"""How much faster is an `align` training step with cached latents than with the VAE in the loop?

One `align` step = forward + backward + optimizer step with only the world projector trainable
(Gemma and the VAE frozen, TheWorld's default freeze flags). Two ways to get the world input:

* VAE in the loop: the world pixels are prepared (decode + resize, `world_pixels`) and the frozen
  VAE encodes them inside the model's forward (`world_pixel_values`), every step;
* cached: the latents are read from a `LatentCache` built beforehand (`world_latents`).

Tokenisation and Gemma's own image preprocessing are the same for both and done once, outside
the timing. Configurations:

* tiny (always): the tiny random Gemma and tiny Cosmos-style VAE of the tests, at 64x64;
* --full-vae: the full-size Wan 2.1 / Cosmos VAE architecture (`AutoencoderKLWan()`, random
  weights, decoder dropped) at 512x512 (256 world tokens per frame) with a small LM. On a
  2-core CPU one VAE encode of one frame takes ~13 s, so this runs 1 warm-up + `--full-steps`.

    python benchmarks/cache_vs_vae.py [--steps 10] [--batch 4] [--full-vae] [--device cpu] [--threads N]

On a shared CPU, timings swing with the other load; `--threads 1` avoids OpenMP oversubscription,
which slows the many small ops of the LM step far more than the VAE's big convolutions (one run
here: the small-LM cached step took 6.1 s at 2 threads and 0.23 s at 1 under a load of 9 on 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from PIL import Image

from theworld.data.sample import Sample
from theworld.model.modeling import TheWorld
from theworld.processing.processor import TheWorldProcessor
from theworld.testing.tiny import TinyGemmaSpec, make_tiny_gemma, make_tiny_vae
from theworld.training.latent_cache import CacheSettings, LatentCache, fingerprint_encoder
from theworld.world_encoder.vae import CosmosWorldEncoder

logger = logging.getLogger("cache_vs_vae")


def _images(folder: Path, count: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"image_{index}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _samples(images: list[str]) -> list[Sample]:
    return [
        Sample(
            id=f"s{index}",
            messages=[
                {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "which way is the ball moving?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "left"}]},
            ],
        )
        for index, image in enumerate(images)
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    name: str,
    model: TheWorld,
    processor: TheWorldProcessor,
    images: list[str],
    workdir: Path,
    warmup: int,
    steps: int,
    device: torch.device,
) -> dict[str, float]:
    """Time align steps with the VAE in the loop and with cached latents, on the same batch."""
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"world_projector"}, f"align trains the world projector only, not {names}"
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)

    samples = _samples(images)
    conversations = [s.messages for s in samples]
    batch = processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, return_tensors="pt", padding=True
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    text_inputs = {k: v.to(device) for k, v in batch.items() if k != "world_pixel_values"}
    text_inputs["labels"] = labels.to(device)
    visuals = [v for s in samples for v in s.visuals()]

    settings = CacheSettings.from_processor(processor)
    cache = LatentCache.open(workdir / f"cache_{name}", fingerprint_encoder(model.world_encoder), settings)
    start = time.perf_counter()
    cache.build(samples, model.world_encoder, processor, batch_size=len(visuals), progress=False)
    build_s = time.perf_counter() - start
    cache = LatentCache.open(workdir / f"cache_{name}", fingerprint_encoder(model.world_encoder), settings)

    def step_vae() -> float:
        pixels = torch.from_numpy(np.stack([processor.world_pixels(v) for v in visuals])).to(device)
        loss = model(**text_inputs, world_pixel_values=pixels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def step_cached() -> float:
        latents = torch.stack([cache.latents_for(v) for v in visuals]).to(device)
        loss = model(**text_inputs, world_latents=latents).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    # Same starting weights for the loss check: the first step of each path, before any update.
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([processor.world_pixels(v) for v in visuals])).to(device)
        loss_vae = float(model(**text_inputs, world_pixel_values=pixels).loss)
        latents = torch.stack([cache.latents_for(v) for v in visuals]).to(device)
        loss_cached = float(model(**text_inputs, world_latents=latents).loss)

    timings: dict[str, list[float]] = {"vae": [], "cached": []}
    for label, step in (("vae", step_vae), ("cached", step_cached)):
        for index in range(warmup + steps):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            if index >= warmup:
                timings[label].append(time.perf_counter() - start)
    vae_s, cached_s = statistics.median(timings["vae"]), statistics.median(timings["cached"])
    return {
        "vae_s": vae_s,
        "cached_s": cached_s,
        "speedup": vae_s / cached_s,
        "build_s": build_s,
        "loss_vae": loss_vae,
        "loss_cached": loss_cached,
        "visuals": len(visuals),
        "tokens": int(text_inputs["input_ids"].shape[1]),
    }


def tiny_setup(workdir: Path, batch: int) -> tuple[TheWorld, TheWorldProcessor, list[str]]:
    settings = dict(world_image_size=64, world_tokens_per_frame=16, world_num_frames=1)
    gemma = make_tiny_gemma(workdir / "tiny_gemma")
    vae = make_tiny_vae(workdir / "tiny_vae")
    model = TheWorld.from_pretrained(gemma, cosmos_model_name=str(vae), dtype=torch.float32, **settings)
    processor = TheWorldProcessor.from_model_config(str(gemma), model.config)
    return model, processor, _images(workdir, batch, 96)


def full_setup(workdir: Path, batch: int) -> tuple[TheWorld, TheWorldProcessor, list[str]]:
    from diffusers import AutoencoderKLWan

    spec = TinyGemmaSpec(
        hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, sliding_window=1024,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    )  # fmt: skip
    gemma = make_tiny_gemma(workdir / "small_gemma", spec)
    settings = dict(world_image_size=512, world_tokens_per_frame=256, world_num_frames=1)
    model = TheWorld.from_pretrained(gemma, dtype=torch.float32, **settings)  # no VAE from disk
    torch.manual_seed(0)
    vae = AutoencoderKLWan()  # default config = the Cosmos-Predict2 / Wan 2.1 VAE architecture
    vae.decoder = None  # TheWorld never decodes; CosmosWorldEncoder.from_pretrained drops it too
    vae.post_quant_conv = None
    vae.requires_grad_(False).eval()
    model.attach_world_encoder(CosmosWorldEncoder(vae))
    processor = TheWorldProcessor.from_model_config(str(gemma), model.config)
    return model, processor, _images(workdir, batch, 640)


def report(label: str, result: dict[str, float]) -> str:
    return (
        f"{label}: cached latents {result['speedup']:.1f}x faster per align step "
        f"(VAE in the loop {result['vae_s']:.3f} s, cached {result['cached_s']:.4f} s, median; "
        f"{result['visuals']} image(s), {result['tokens']} tokens; one-off cache build {result['build_s']:.2f} s; "
        f"loss {result['loss_vae']:.6f} vs {result['loss_cached']:.6f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per path, tiny model (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per path first, tiny model (default 2)")
    parser.add_argument("--batch", type=int, default=4, help="images per step, tiny model (default 4)")
    parser.add_argument("--full-vae", action="store_true", help="also the full-size VAE at 512x512 (slow on CPU)")
    parser.add_argument("--full-steps", type=int, default=2, help="timed steps per path, full VAE (default 2)")
    parser.add_argument("--full-batch", type=int, default=1, help="images per step, full VAE (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()  # the "newly initialized" load report is expected here
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    lines = []
    with tempfile.TemporaryDirectory(prefix="cache_vs_vae_") as tmp:
        workdir = Path(tmp)
        model, processor, images = tiny_setup(workdir, args.batch)
        result = measure("tiny", model, processor, images, workdir, args.warmup, args.steps, device)
        lines.append(report(f"tiny model, 64x64, batch {args.batch}", result))
        print(lines[-1], flush=True)
        del model
        if args.full_vae:
            model, processor, images = full_setup(workdir, args.full_batch)
            result = measure("full", model, processor, images, workdir, 1, args.full_steps, device)
            lines.append(report(f"full-size Cosmos VAE, 512x512, small LM, batch {args.full_batch}", result))
            print(lines[-1], flush=True)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
