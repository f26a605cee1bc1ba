"""`align` stage on a GPU at gemma-3-4b's real size: tokens/s, MFU and peak memory.

Builds gemma-3-4b's architecture with random weights from a config written out in `theworld.memory.configs` (no
download), plus the full-size Cosmos-Predict2 / Wan 2.1 VAE architecture (`AutoencoderKLWan()`
defaults, encoder half), in bf16 on one CUDA GPU, and times `align` training steps: the VAE in
the loop (world pixels in, as a first `align` run without a latent cache does), Gemma's SigLIP
image path, the frozen LM, and only the world projector training (fp32 master weights, AdamW),
with `supervised_lm_loss`. Default: batch 8, 512x512 images, 256 world tokens per image.

    .venv/bin/python benchmarks/gpu_stage1.py                # needs a CUDA GPU
    .venv/bin/python benchmarks/gpu_stage1.py --dry-run      # scaled-down, on the CPU (for tests)
    .venv/bin/python benchmarks/gpu_stage1.py --params-only  # parameter counts only, no weights

It also prints parameter counts computed from the configs on the meta device (no weights): the
world projector's trainable parameters at gemma-3-4b's dimensions, and gemma-3-4b's total.

FLOPs per step (model FLOPs, stated per component; B images, L tokens per sequence, T = B*L,
K supervised tokens, W = B*world tokens, P = B*SigLIP patches):

    LM forward      2*N_lm*T + A + 2*H*V*K        N_lm = decoder-layer linear weights (no embedding,
                                                  no norm scales),
                                                  A = attention score/value matmuls
                                                    = sum over layers 4*B*L*ctx*heads*head_dim,
                                                  ctx = L (global) or min(L, window) (local);
                                                  LM head only at the K supervised positions
    LM backward     2*N_lm*T + 2*A + 2*H*V*K      frozen weights: gradients w.r.t. activations
                                                  only (one matmul per weight, not two), all the
                                                  way down to the world tokens
    projector       6*N_proj*W                    forward + backward + weight gradients
    SigLIP forward  2*N_vis*P + A_vis + 2*N_mm*B*256   frozen, off the gradient path (N_vis: its
                                                  linear and patch-conv weights; N_mm: the image
                                                  projection to the LM)
    VAE encoder     counted by torch's FlopCounterMode on one encode (convolutions)

    MFU = total / (median step seconds * the GPU's peak dense bf16 FLOP/s)

A whole step is also counted once with `torch.utils.flop_counter.FlopCounterMode` as a check
(on a GPU it also counts the attention kernels in full, masked blocks included; on the CPU it
does not see attention at all, so the dry run's count is below the formula).

Values of gemma-3-4b's config: hidden 2560, intermediate 10240, 34 layers, 8 query heads, 4 KV
heads, head_dim 256, query_pre_attn_scalar 256, sliding window 1024 with 5 local layers per global
one (layers 6, 12, ..., 30 global), vocabulary 262,208 (rows of the embedding, tied LM head),
rope theta 1e6 with linear factor 8 on global layers and 1e4 on local ones, 131,072 positions;
SigLIP-So400m: hidden 1152, intermediate 4304, 27 layers, 16 heads, 896 px, patch 14, no head;
256 image tokens; boi/eoi/image token ids 255999 / 256000 / 262144. These are from memory of the
released config.json plus transformers' Gemma3TextConfig defaults (which the released config
leaves implicit: vocabulary, heads, head_dim), cross-read against public copies of the config;
they give 4,300,079,472 parameters, the 4.3B of the model card. The world-marker ids (6, 7, 8 for
`<unused0..2>`) are placeholders: unverified, and irrelevant with random weights.
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
    count_parameters,
    matmul_parameters,
    machine_description,
    write_json,
)

# gemma-3-4b's config lives in the library (`theworld estimate-memory` uses it too).
from theworld.memory.configs import WORLD_MARKER_IDS, gemma3_4b_config  # noqa: E402
from theworld.testing.gemma import GemmaSpec, gemma3_config, gemma3_layer_types  # noqa: E402

# Peak dense bf16 tensor FLOP/s (no sparsity) by device-name substring, first match wins.
PEAK_BF16_FLOPS = (
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100 NVL", 835.0e12),
    ("H100", 989.4e12),
    ("H800", 989.4e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("A6000", 155e12),
)


def dry_run_config():
    """A scaled-down Gemma 3 with the same structure (SigLIP image path, 5:1 layers), for the CPU."""
    spec = GemmaSpec(vocab_size=1024, num_hidden_layers=6, sliding_window=64, max_position_embeddings=2048,
                     layer_types=gemma3_layer_types(6), vision_image_size=56, vision_patch_size=14)  # fmt: skip
    return gemma3_config(spec, pad=0, eos=1, bos=2, boi=20, eoi=21, image=22)


def world_config_for(gemma_config, tokens_per_frame: int, image_size: int, num_frames: int = 17,
                     projector_type: str = "mlp"):
    from theworld import TheWorldConfig

    return TheWorldConfig.from_gemma_config(
        gemma_config,
        world_tokens_per_frame=tokens_per_frame,
        world_image_size=image_size,
        world_num_frames=num_frames,
        world_projector_type=projector_type,
        **WORLD_MARKER_IDS,
    )


# ------------------------------------------------------------------------------------------------
# parameter counts (meta device: no memory, no weights)


def parameter_counts(tokens_per_frame: int = 256, image_size: int = 512, num_frames: int = 17) -> dict[str, Any]:
    """gemma-3-4b's parameters and the world projector's, from configs alone."""
    from diffusers import AutoencoderKLWan
    from transformers import Gemma3ForConditionalGeneration

    from theworld.model.projector import WorldProjector

    gemma_cfg = gemma3_4b_config()
    with torch.device("meta"):
        gemma = Gemma3ForConditionalGeneration(gemma_cfg)
        vae = AutoencoderKLWan()
    lm = gemma.model.language_model
    out: dict[str, Any] = {
        "gemma3_4b_total": count_parameters(gemma),
        "gemma3_4b_language_model": count_parameters(lm),
        "gemma3_4b_embedding": lm.embed_tokens.weight.numel(),
        "gemma3_4b_decoder_layers": count_parameters(lm.layers),
        "gemma3_4b_vision_tower": count_parameters(gemma.model.vision_tower),
        "gemma3_4b_mm_projector": count_parameters(gemma.model.multi_modal_projector),
        "vae_total": count_parameters(vae),
        "vae_encoder_half": count_parameters(vae.encoder) + count_parameters(vae.quant_conv),
        "projector": [],
    }
    for ptype in ("mlp", "linear"):
        for tpf in (64, 256, 1024):
            cfg = world_config_for(gemma_cfg, tpf, image_size, num_frames, ptype)
            with torch.device("meta"):
                projector = WorldProjector(cfg)
            out["projector"].append({
                "type": ptype, "tokens_per_frame": tpf, "image_size": image_size, "num_frames": num_frames,
                "patch": cfg.world_patch_size, "input_dim": cfg.world_latent_channels * cfg.world_patch_size ** 2,
                "trainable": count_parameters(projector),
            })  # fmt: skip
    out["projector_default"] = next(
        p["trainable"] for p in out["projector"] if p["type"] == "mlp" and p["tokens_per_frame"] == tokens_per_frame
    )
    return out


def format_counts(counts: dict[str, Any]) -> str:
    lines = [
        f"gemma-3-4b architecture: {counts['gemma3_4b_total']:,} parameters "
        f"(language model {counts['gemma3_4b_language_model']:,} of which embedding {counts['gemma3_4b_embedding']:,} "
        f"tied with the LM head; SigLIP {counts['gemma3_4b_vision_tower']:,}; "
        f"image projector {counts['gemma3_4b_mm_projector']:,})",
        f"Cosmos / Wan 2.1 VAE: {counts['vae_total']:,} parameters, encoder half {counts['vae_encoder_half']:,}",
        "world projector trainable parameters at gemma-3-4b's hidden 2560 (512x512, world_num_frames 17):",
    ]
    for p in counts["projector"]:
        lines.append(f"  {p['type']:>6}, {p['tokens_per_frame']:>4} tokens/frame ({p['patch']}x{p['patch']} patches, "
                     f"input {p['input_dim']}): {p['trainable']:,}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# FLOPs


def attention_flops(batch: int, seq_len: int, layer_kinds: list[str], window: int | None, heads: int,
                    head_dim: int) -> float:
    """Score and value matmuls, full square (no causal discount), per the module docstring."""
    total = 0.0
    for kind in layer_kinds:
        ctx = seq_len if kind == "full_attention" or window is None else min(seq_len, window)
        total += 4.0 * batch * seq_len * ctx * heads * head_dim
    return total


def analytic_flops(model, batch: int, seq_len: int, supervised: int, world_tokens: int, image_patches: int,
                   image_tokens: int) -> dict[str, float]:
    cfg = model.config
    text = cfg.text_config
    vision = cfg.vision_config
    lm = model.model.language_model
    n_lm = matmul_parameters(lm.layers)
    tokens = batch * seq_len
    attn = attention_flops(batch, seq_len, text.layer_types, text.sliding_window, text.num_attention_heads,
                           text.head_dim)
    head = 2.0 * text.hidden_size * text.vocab_size * batch * supervised
    n_proj_linear = matmul_parameters(model.world_projector)
    n_vis = matmul_parameters(model.model.vision_tower)
    vis_attn = attention_flops(batch, image_patches, ["full_attention"] * vision.num_hidden_layers, None,
                               vision.num_attention_heads, vision.hidden_size // vision.num_attention_heads)
    n_mm = model.model.multi_modal_projector.mm_input_projection_weight.numel()
    return {
        "lm_forward": 2.0 * n_lm * tokens + attn + head,
        "lm_backward": 2.0 * n_lm * tokens + 2.0 * attn + head,
        "projector": 6.0 * n_proj_linear * batch * world_tokens,
        "siglip_forward": 2.0 * n_vis * batch * image_patches + vis_attn + 2.0 * n_mm * batch * image_tokens,
    }


def sequence_length(cfg, prompt: int, question: int, answer: int) -> int:
    """Tokens per sequence in `make_batch`'s layout."""
    return 1 + prompt + (cfg.world_tokens_per_frame + 2) + (cfg.mm_tokens_per_image + 2) + question + answer


def estimated_step_flops(batch: int = 8, image_size: int = 512, tokens_per_frame: int = 256, prompt: int = 16,
                         question: int = 32, answer: int = 32) -> dict[str, float]:
    """The FLOP formula at gemma-3-4b's real size, on the meta device (no weights, no GPU)."""
    from diffusers import AutoencoderKLWan

    from theworld import TheWorld
    from theworld.world_encoder.vae import CosmosWorldEncoder

    cfg = world_config_for(gemma3_4b_config(), tokens_per_frame, image_size)
    with torch.device("meta"):
        model = TheWorld(cfg)
        vae = AutoencoderKLWan()
        vae.decoder = None
        vae.post_quant_conv = None
        encoder = CosmosWorldEncoder(vae)
        pixels = torch.empty(batch, 3, 1, image_size, image_size)
    vision = cfg.vision_config
    flops = analytic_flops(model, batch, sequence_length(cfg, prompt, question, answer), answer, tokens_per_frame,
                           (vision.image_size // vision.patch_size) ** 2, cfg.mm_tokens_per_image)
    flops["vae_encoder"] = counted_flops(lambda: encoder(pixels))
    flops["total"] = sum(flops.values())
    return flops


def counted_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def peak_flops_for(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key in device_name:
            return flops
    return None


# ------------------------------------------------------------------------------------------------
# the step


def build(gemma_cfg, tokens_per_frame: int, image_size: int, dtype: torch.dtype, device: torch.device,
          vae_kwargs: dict[str, Any] | None = None, attn_implementation: str = "sdpa", seed: int = 0):
    """Random TheWorld (bf16 LM, fp32 projector) with the VAE encoder attached, built on `device`."""
    from diffusers import AutoencoderKLWan

    from theworld import TheWorld
    from theworld.world_encoder.vae import CosmosWorldEncoder

    cfg = world_config_for(gemma_cfg, tokens_per_frame, image_size)
    cfg._attn_implementation = attn_implementation
    cfg.text_config._attn_implementation = attn_implementation
    cfg.vision_config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    with torch.device(device):
        model = TheWorld._from_config(cfg, dtype=dtype)
        vae = AutoencoderKLWan(**(vae_kwargs or {}))
    # TheWorld never decodes: the decoder half is dropped, as CosmosWorldEncoder.from_pretrained does.
    vae.decoder = None
    vae.post_quant_conv = None
    vae.to(device=device, dtype=dtype).requires_grad_(False).eval()
    model.attach_world_encoder(CosmosWorldEncoder(vae).to(device))
    model.world_projector.float()  # trainable weights keep fp32 master copies
    model.apply_freezing()
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    if trainable != {"world_projector"}:
        raise RuntimeError(f"align must train the world projector only, found trainable {sorted(trainable)}")
    return model


def make_batch(model, batch: int, prompt: int, question: int, answer: int, device: torch.device,
               dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
    """One align batch as the processor lays it out: text, world block, Gemma image block, question, answer."""
    cfg = model.config
    text = cfg.text_config
    generator = torch.Generator().manual_seed(seed)
    # Ordinary text ids: below the image special tokens when there is room (gemma-3-4b), else above.
    specials = [cfg.image_token_id, cfg.eoi_token_index, cfg.boi_token_index]
    low, high = 100, min(specials)
    if high - low < 100:
        low, high = max(specials) + 1, text.vocab_size

    def words(n: int) -> torch.Tensor:
        return torch.randint(low, high, (batch, n), generator=generator)

    def const(value: int, n: int = 1) -> torch.Tensor:
        return torch.full((batch, n), value, dtype=torch.long)

    world_n = cfg.world_tokens_per_frame
    image_n = cfg.mm_tokens_per_image
    parts = [
        const(text.bos_token_id), words(prompt),
        const(cfg.start_of_world_token_id), const(cfg.world_token_id, world_n), const(cfg.end_of_world_token_id),
        const(cfg.boi_token_index), const(cfg.image_token_id, image_n), const(cfg.eoi_token_index),
        words(question), words(answer),
    ]  # fmt: skip
    ids = torch.cat(parts, dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, -answer:] = ids[:, -answer:]
    token_type_ids = (ids == cfg.image_token_id).long()
    vision = cfg.vision_config
    pixel_values = torch.rand(batch, 3, vision.image_size, vision.image_size, generator=generator) * 2 - 1
    world_pixels = torch.rand(batch, 3, 1, cfg.world_image_size, cfg.world_image_size, generator=generator) * 2 - 1
    return {
        "inputs": {
            "input_ids": ids.to(device),
            "attention_mask": torch.ones_like(ids).to(device),
            "token_type_ids": token_type_ids.to(device),
            "pixel_values": pixel_values.to(device, dtype),
            "world_pixel_values": world_pixels.to(device, dtype),
        },
        "labels": labels.to(device),
        "seq_len": ids.shape[1],
        "world_tokens": world_n,
        "image_tokens": image_n,
        "image_patches": (vision.image_size // vision.patch_size) ** 2,
        "supervised": answer,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(
    dry_run: bool = False,
    batch: int = 8,
    image_size: int = 512,
    tokens_per_frame: int = 256,
    prompt: int = 16,
    question: int = 32,
    answer: int = 32,
    steps: int = 10,
    warmup: int = 2,
    peak_tflops: float | None = None,
    count_step_flops: bool = True,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> dict[str, Any]:
    from theworld.training.loss import supervised_lm_loss

    if dry_run:
        device, dtype = torch.device("cpu"), torch.bfloat16
        gemma_cfg = dry_run_config()
        vae_kwargs = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit(
                "gpu_stage1.py needs a CUDA GPU (torch.cuda.is_available() is False on this machine). "
                "Run it on a GPU machine, or use --dry-run for a scaled-down CPU check, or --params-only "
                "for the parameter counts."
            )
        device, dtype = torch.device("cuda"), torch.bfloat16
        gemma_cfg = gemma3_4b_config()
        vae_kwargs = {}

    start = time.perf_counter()
    model = build(gemma_cfg, tokens_per_frame, image_size, dtype, device, vae_kwargs, attn_implementation)
    build_s = time.perf_counter() - start
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    data = make_batch(model, batch, prompt, question, answer, device, dtype)
    assert data["seq_len"] == sequence_length(model.config, prompt, question, answer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = supervised_lm_loss(model, data["inputs"], data["labels"])
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def vae_encode() -> None:
        with torch.no_grad():
            model.world_encoder(data["inputs"]["world_pixel_values"])

    losses = [step() for _ in range(warmup)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        losses.append(step())
        sync(device)
        seconds.append(time.perf_counter() - t0)
    peak_allocated = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    peak_reserved = torch.cuda.max_memory_reserved() if device.type == "cuda" else None

    vae_seconds = []
    for _ in range(max(1, min(steps, 3))):
        sync(device)
        t0 = time.perf_counter()
        vae_encode()
        sync(device)
        vae_seconds.append(time.perf_counter() - t0)

    flops = analytic_flops(model, batch, data["seq_len"], data["supervised"], data["world_tokens"],
                           data["image_patches"], data["image_tokens"])
    flops["vae_encoder"] = counted_flops(vae_encode)
    total_flops = sum(flops.values())
    step_counted = counted_flops(step) if count_step_flops else None

    step_s = statistics.median(seconds)
    tokens = batch * data["seq_len"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    peak = peak_tflops * 1e12 if peak_tflops else peak_flops_for(device_name)
    mfu = total_flops / (step_s * peak) if peak else None
    mfu_lm = (flops["lm_forward"] + flops["lm_backward"] + flops["projector"]) / (step_s * peak) if peak else None
    return {
        "dry_run": dry_run,
        "device": device_name,
        "dtype": str(dtype).replace("torch.", ""),
        "attn_implementation": attn_implementation,
        "gradient_checkpointing": gradient_checkpointing,
        "batch": batch,
        "seq_len": data["seq_len"],
        "image_size": image_size,
        "world_tokens_per_image": data["world_tokens"],
        "supervised_tokens_per_sequence": data["supervised"],
        "build_s": build_s,
        "step_s_median": step_s,
        "step_s": seconds,
        "tokens_per_s": tokens / step_s,
        "images_per_s": batch / step_s,
        "vae_encode_s_median": statistics.median(vae_seconds),
        "peak_allocated_bytes": peak_allocated,
        "peak_reserved_bytes": peak_reserved,
        "flops": flops,
        "flops_total": total_flops,
        "flops_counted_step": step_counted,
        "peak_flops": peak,
        "mfu": mfu,
        "mfu_lm_and_projector": mfu_lm,
        "losses": losses,
        "parameters_total": count_parameters(model),
        "parameters_trainable": count_parameters(model, trainable_only=True),
    }


def flop_str(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} FLOP"


def format_run(r: dict[str, Any]) -> str:
    gib = (lambda b: "n/a (CPU)" if b is None else f"{b / 2**30:.1f} GiB")
    f = {k: flop_str(v) for k, v in r["flops"].items()}
    lines = [
        f"device: {r['device']}, {r['dtype']}, attention {r['attn_implementation']}, "
        f"gradient checkpointing {r['gradient_checkpointing']}{' (DRY RUN: scaled-down model)' if r['dry_run'] else ''}",
        f"align step: batch {r['batch']} x {r['seq_len']} tokens ({r['world_tokens_per_image']} world tokens per "
        f"{r['image_size']}x{r['image_size']} image, VAE in the loop), {r['parameters_trainable']:,} trainable of "
        f"{r['parameters_total']:,}",
        f"step time (median of {len(r['step_s'])}): {r['step_s_median']:.3f} s -> {r['tokens_per_s']:,.0f} tokens/s, "
        f"{r['images_per_s']:.2f} images/s; VAE encode of the batch alone {r['vae_encode_s_median']:.3f} s",
        f"peak memory: allocated {gib(r['peak_allocated_bytes'])}, reserved {gib(r['peak_reserved_bytes'])}",
        f"model FLOPs per step: {flop_str(r['flops_total'])} (LM forward {f['lm_forward']}, LM backward "
        f"{f['lm_backward']}, projector {f['projector']}, SigLIP {f['siglip_forward']}, VAE encoder "
        f"{f['vae_encoder']})"
        + (f"; FlopCounterMode on one whole step: {flop_str(r['flops_counted_step'])}"
           if r["flops_counted_step"] else ""),
    ]
    if r["mfu"] is not None:
        lines.append(f"MFU: {100 * r['mfu']:.1f}% of {r['peak_flops'] / 1e12:.0f} TFLOP/s dense bf16 "
                     f"(LM + projector FLOPs only: {100 * r['mfu_lm_and_projector']:.1f}%)")
    else:
        lines.append("MFU: unknown peak FLOP/s for this device (pass --peak-tflops)")
    return "\n".join(lines)


def vae_encode_timing(device: str = "cpu", image_size: int = 512, frames: tuple[int, ...] = (1, 5),
                      repeats: int = 1, dtype: str = "float32") -> list[dict[str, Any]]:
    """Encode time of the full-size VAE (random weights, encoder half) for 1 image and for clips."""
    from diffusers import AutoencoderKLWan

    from theworld.world_encoder.vae import CosmosWorldEncoder

    torch.manual_seed(0)
    vae = AutoencoderKLWan()
    vae.decoder = None
    vae.post_quant_conv = None
    encoder = CosmosWorldEncoder(vae.requires_grad_(False).eval()).to(device=device, dtype=getattr(torch, dtype))
    dev = torch.device(device)
    out = []
    for n in frames:
        pixels = torch.rand(1, 3, n, image_size, image_size, device=device, dtype=getattr(torch, dtype)) * 2 - 1
        wall, cpu = [], []
        for _ in range(repeats):
            sync(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                latents = encoder(pixels)
            sync(dev)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out.append({"frames": n, "image_size": image_size, "seconds": statistics.median(wall),
                    "cpu_seconds": statistics.median(cpu), "threads": torch.get_num_threads(),
                    "latent_shape": list(latents.shape)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="scaled-down model on the CPU (tests the script)")
    parser.add_argument("--params-only", action="store_true", help="only the parameter counts (no weights)")
    parser.add_argument("--vae-encode-only", action="store_true",
                        help="only time the full-size VAE encode (any device, see --device)")
    parser.add_argument("--device", default="cpu", help="device for --vae-encode-only")
    parser.add_argument("--frames", type=int, nargs="*", default=[1, 5], help="clip lengths for --vae-encode-only")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--tokens-per-frame", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not known")
    parser.add_argument("--no-count-flops", action="store_true", help="skip the FlopCounterMode check step")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--attn-implementation", default="sdpa")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    counts = parameter_counts(args.tokens_per_frame, args.image_size)
    print(format_counts(counts))
    payload: dict[str, Any] = {"parameter_counts": counts, "machine": machine_description()}
    if not args.dry_run:
        estimate = estimated_step_flops(args.batch, args.image_size, args.tokens_per_frame)
        payload["estimated_step_flops"] = estimate
        payload["estimated_step_shape"] = {
            "batch": args.batch, "image_size": args.image_size, "tokens_per_frame": args.tokens_per_frame,
            "seq_len": sequence_length(world_config_for(gemma3_4b_config(), args.tokens_per_frame, args.image_size),
                                       16, 32, 32),
        }  # fmt: skip
        print(f"FLOP formula at gemma-3-4b's size, batch {args.batch}, {args.image_size}x{args.image_size}, "
              f"{args.tokens_per_frame} world tokens: {flop_str(estimate['total'])} per align step ("
              + ", ".join(f"{k} {flop_str(v)}" for k, v in estimate.items() if k != "total") + ")")
    if args.vae_encode_only:
        payload["vae_encode"] = vae_encode_timing(args.device, args.image_size, tuple(args.frames))
        for row in payload["vae_encode"]:
            print(f"VAE encode on {args.device}, {row['frames']} frame(s) at {row['image_size']}x{row['image_size']}: "
                  f"{row['seconds']:.2f} s wall, {row['cpu_seconds']:.2f} s CPU time over {row['threads']} "
                  f"thread(s) -> latents {row['latent_shape']}")
    elif not args.params_only:
        if args.dry_run:
            args.batch, args.image_size, args.tokens_per_frame = min(args.batch, 2), 64, 16
            args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
        try:
            result = run(
                dry_run=args.dry_run, batch=args.batch, image_size=args.image_size,
                tokens_per_frame=args.tokens_per_frame, steps=args.steps, warmup=args.warmup,
                peak_tflops=args.peak_tflops, count_step_flops=not args.no_count_flops,
                gradient_checkpointing=args.gradient_checkpointing, attn_implementation=args.attn_implementation,
            )  # fmt: skip
        except torch.cuda.OutOfMemoryError as error:
            total = torch.cuda.get_device_properties(0).total_memory / 2**30
            raise SystemExit(
                f"out of GPU memory on {torch.cuda.get_device_name(0)} ({total:.0f} GiB) at batch {args.batch}: "
                "batch 8 needs roughly 45 GiB without checkpointing (8.6 GiB of bf16 weights, the rest "
                "activations kept for the backward to the world tokens). Retry with --gradient-checkpointing "
                f"or a smaller --batch.\n{error}"
            ) from error
        payload["run"] = result
        print(format_run(result))
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
