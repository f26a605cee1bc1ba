"""Measured peak memory of one real training step, to check `estimate_memory` against.

A random TheWorld is built from a config (CPU; nothing downloaded), the stage is applied as
`theworld train` applies it (`apply_stage`, fp32 master copies under bf16), and `TheWorldTrainer`
itself runs a few optimizer steps on synthetic batches of an exact shape: the Trainer's own
optimizer (fused AdamW), accelerate's bf16 autocast and fp32 output cast, gradient clipping,
gradient checkpointing, `supervised_lm_loss`. The last step is measured:

* peak = live tensor bytes when the step starts (weights, buffers, optimizer states: summed over
  unique storages) + the peak of the running sum of every tensor allocation and free during the
  step (`torch.profiler` memory events, `profile_memory=True`; the method of
  benchmarks/loss_memory.py);
* on a GPU, `torch.cuda.max_memory_allocated` over the same step instead.

Torch tensors only: the process's other memory (Python, libraries, BLAS scratch) is not counted,
which is also what the estimate counts. The CPU measurement runs with one torch thread: several
CPU kernels (reductions, the flash-attention kernel) allocate one scratch buffer per thread, which
would make the figure depend on the machine's core count.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch

from theworld.memory.estimate import StepSetup

logger = logging.getLogger(__name__)


@dataclass
class MeasuredPeak:
    peak_bytes: int
    """Most bytes held by torch tensors at once during the measured step."""
    start_bytes: int
    """Weights, buffers and optimizer states held when the step started."""
    method: str
    details: dict[str, Any] = field(default_factory=dict)


def small_config(hidden: int = 128, layers: int = 2, intermediate: int = 512, heads: int = 4, kv_heads: int = 2,
                 head_dim: int = 32, vocab: int = 2048, vision_hidden: int = 64, vision_intermediate: int = 128,
                 vision_layers: int = 2, image_size: int = 64, patch_size: int = 8, mm_tokens: int = 16,
                 world_image_size: int = 64, world_tokens: int = 16):
    """A small random TheWorld config (no tokenizer needed) whose steps are measured on the CPU in seconds.

    Token ids: pad 0, eos 1, bos 2, image markers 5/6/7, world markers 10/11/12; text ids are drawn above.
    """
    from theworld.model.configuration import TheWorldConfig
    from theworld.testing.gemma import GemmaSpec, gemma3_config

    spec = GemmaSpec(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=vocab, sliding_window=4096, max_position_embeddings=8192,
        layer_types=["full_attention" if i % 2 else "sliding_attention" for i in range(layers)],
        vision_hidden_size=vision_hidden, vision_intermediate_size=vision_intermediate, vision_num_hidden_layers=vision_layers,
        vision_image_size=image_size, vision_patch_size=patch_size, mm_tokens_per_image=mm_tokens,
    )  # fmt: skip
    gemma = gemma3_config(spec, pad=0, eos=1, bos=2, boi=5, eoi=6, image=7)
    return TheWorldConfig.from_gemma_config(gemma, world_image_size=world_image_size, world_tokens_per_frame=world_tokens,
                                            world_num_frames=5, start_of_world_token_id=10, world_token_id=11,
                                            end_of_world_token_id=12)  # fmt: skip


SMALL_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1)
"""A small Wan VAE (the Cosmos VAE's architecture, 12x narrower, one residual block per level)."""


# Small-model cases the estimate is checked on (tests/memory and benchmarks/memory_estimate.py): every
# stage, bf16 and fp32, batch sizes 2-4, 160-512 tokens, gradient checkpointing, LoRA, the VAE in
# the loop, eager attention, a large vocabulary (logits), 5-frame clips. (config sizes, setup values)
_WIDE = dict(hidden=192, intermediate=768, heads=6, head_dim=32, layers=4, vision_hidden=96, vision_intermediate=256,
             vision_layers=3, image_size=96, mm_tokens=36)  # fmt: skip
VALIDATION_CASES: dict[str, tuple[dict, dict]] = {
    "align bf16 b4x384": ({}, dict(stage="align", batch_size=4, seq_len=384)),
    "align bf16 VAE in the loop b2x512": (_WIDE, dict(stage="align", batch_size=2, seq_len=512, latent_cache=False)),
    "vision bf16 b3x320": (_WIDE, dict(stage="vision", batch_size=3, seq_len=320)),
    "vision bf16 checkpointing b4x192": ({}, dict(stage="vision", batch_size=4, seq_len=192, gradient_checkpointing=True)),
    "finetune fp32 b3x160, 16k vocab, 5-frame clips": (
        dict(vocab=16384, layers=3),
        dict(stage="finetune", bf16=False, batch_size=3, seq_len=160, supervised_tokens=64, world_frames=5)),
    "finetune LoRA bf16 b2x256": (_WIDE, dict(stage="finetune", batch_size=2, seq_len=256, lora=True)),
    "full bf16 checkpointing b2x384": (_WIDE, dict(stage="full", batch_size=2, seq_len=384, gradient_checkpointing=True)),
    "full fp32 eager b2x256": ({}, dict(stage="full", bf16=False, batch_size=2, seq_len=256, attn_implementation="eager")),
}  # fmt: skip


def validation_case(name: str):
    """(config, setup) of a validation case: latents from a cache, 16 supervised tokens, CPU kernels, unless set."""
    sizes, overrides = VALIDATION_CASES[name]
    values = {"latent_cache": True, "supervised_tokens": 16, "device": "cpu", **overrides}
    return small_config(**sizes), StepSetup(**values)


def synthetic_sample(config, setup: StepSetup, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One training sample of exactly `setup.seq_len` tokens: BOS, image block, world block, text, answer."""
    from theworld.memory.estimate import sequence_layout

    layout = sequence_layout(config, setup)
    vocab = config.text_config.vocab_size
    special = {config.boi_token_id, config.eoi_token_id, config.image_token_id, config.start_of_world_token_id,
               config.world_token_id, config.end_of_world_token_id}  # fmt: skip
    low = max(s for s in special if s is not None) + 1
    ids = torch.randint(low, vocab, (setup.seq_len,), generator=generator)
    ids[0] = config.text_config.bos_token_id if config.text_config.bos_token_id is not None else ids[0]
    pos = 1
    if setup.images:
        ids[pos] = config.boi_token_id
        ids[pos + 1 : pos + 1 + config.mm_tokens_per_image] = config.image_token_id
        ids[pos + 1 + config.mm_tokens_per_image] = config.eoi_token_id
        pos += config.mm_tokens_per_image + 2
    if layout.world_tokens:
        ids[pos] = config.start_of_world_token_id
        ids[pos + 1 : pos + 1 + layout.world_tokens] = config.world_token_id
        ids[pos + 1 + layout.world_tokens] = config.end_of_world_token_id
    labels = torch.full_like(ids, -100)
    labels[-layout.supervised :] = ids[-layout.supervised :]
    sample = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": (ids == config.image_token_id).long(),
        "labels": labels,
    }
    if setup.images:
        size = config.vision_config.image_size
        sample["pixel_values"] = torch.randn(3, size, size, generator=generator)
    if layout.world_tokens:
        if setup.latent_cache:
            side = config.world_image_size // config.world_spatial_compression
            frames = config.world_latent_frames(setup.world_frames)
            sample["world_latents"] = torch.randn(config.world_latent_channels, frames, side, side, generator=generator)
        else:
            size = config.world_image_size
            sample["world_pixel_values"] = torch.rand(3, setup.world_frames, size, size, generator=generator) * 2 - 1
    return sample


def _stack(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def random_model(config, setup: StepSetup, vae_config: dict | None = None, seed: int = 0, device: str = "cpu"):
    """A random TheWorld (and VAE encoder when the VAE runs in the loop) with the stage applied as the trainer does."""
    from theworld.model.modeling import TheWorld
    from theworld.training.stages import LoraSettings, apply_stage, cast_trainable_to_fp32
    from theworld.world_encoder.vae import CosmosWorldEncoder

    dtype = torch.bfloat16 if setup.bf16 else torch.float32
    config = config.__class__.from_dict(config.to_dict())
    config._attn_implementation = setup.attn_implementation
    torch.manual_seed(seed)
    with torch.device(device):
        model = TheWorld(config).to(dtype)
    if config.enable_world and not setup.latent_cache:
        from diffusers import AutoencoderKLWan

        with torch.device(device):
            vae = AutoencoderKLWan(**(vae_config or {}))
        vae.decoder = None
        vae.post_quant_conv = None
        model.attach_world_encoder(CosmosWorldEncoder(vae.to(dtype).requires_grad_(False).eval()))
    lora = LoraSettings(r=setup.lora_r, alpha=2 * setup.lora_r, dropout=setup.lora_dropout)
    trainable = apply_stage(model, setup.stage, use_lora=setup.lora, lora=lora)
    if setup.bf16:
        cast_trainable_to_fp32(model)
    return model, trainable


def live_bytes(*groups) -> int:
    """Bytes of the unique storages among the given tensors (tied and viewed tensors once)."""
    seen: dict[int, int] = {}
    for group in groups:
        for tensor in group:
            if tensor is None or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _optimizer_tensors(optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]


def profiler_peak(events) -> int:
    """Peak of the running sum of CPU tensor allocations (+) and frees (-) among profiler events."""
    return profiler_peak_and_op(events)[0]


def profiler_peak_and_op(events) -> tuple[int, str]:
    """The peak (see `profiler_peak`) and the names of the ops running when it was reached (outermost first)."""
    cpu = torch._C._autograd.DeviceType.CPU
    events = list(events)
    memory = [e for e in events if e.name() == "[memory]" and e.device_type() == cpu]
    memory.sort(key=lambda e: e.start_ns())
    running = peak = 0
    when = None
    for event in memory:
        running += event.nbytes()
        if running > peak:
            peak, when = running, event.start_ns()
    ops = [e for e in events if e.name() != "[memory]" and when is not None
           and e.start_ns() <= when <= e.start_ns() + e.duration_ns()]  # fmt: skip
    ops.sort(key=lambda e: (e.start_ns(), -e.duration_ns()))
    return peak, " > ".join(e.name() for e in ops[-3:])


def measure_step(config, setup: StepSetup, vae_config: dict | None = None, steps: int = 2, device: str = "cpu",
                 seed: int = 0) -> MeasuredPeak:
    """Peak memory of the last of `steps` optimizer steps of `TheWorldTrainer` (the first ones create the
    optimizer states)."""
    from transformers import TrainerCallback

    from theworld.training.config import TrainConfig
    from theworld.training.trainer import TheWorldTrainer

    model, trainable = random_model(config, setup, vae_config, seed, device=device)
    generator = torch.Generator().manual_seed(seed)
    count = setup.batch_size * setup.gradient_accumulation_steps * steps
    data = [synthetic_sample(model.config, setup, generator) for _ in range(count)]
    state: dict[str, Any] = {}

    class Measure(TrainerCallback):
        def on_step_end(self, args, trainer_state, control, **kwargs):
            if trainer_state.global_step == steps - 1:
                self.start(kwargs["model"], kwargs["optimizer"])
            elif trainer_state.global_step == steps:
                self.stop()

        def start(self, model, optimizer):
            state["start_bytes"] = live_bytes(model.parameters(), model.buffers(), _optimizer_tensors(optimizer))
            if device == "cuda":
                torch.cuda.synchronize()
                state["cuda_before"] = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            else:
                from torch.profiler import ProfilerActivity, profile

                state["profiler"] = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
                state["profiler"].__enter__()

        def stop(self):
            if device == "cuda":
                torch.cuda.synchronize()
                state["peak_above_start"] = torch.cuda.max_memory_allocated() - state["cuda_before"]
                state["start_bytes"] = state["cuda_before"]  # everything allocated, not only weights and states
            else:
                prof = state.pop("profiler")
                prof.__exit__(None, None, None)
                state["peak_above_start"], state["peak_op"] = profiler_peak_and_op(prof.profiler.kineto_results.events())

    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="theworld_measure_") as out:
            train_config = TrainConfig(
                output_dir=out, max_steps=steps, per_device_train_batch_size=setup.batch_size,
                gradient_accumulation_steps=setup.gradient_accumulation_steps, learning_rate=1e-4, bf16=setup.bf16,
                gradient_checkpointing=setup.gradient_checkpointing, logging_steps=10_000, save_steps=10_000,
                stage=setup.stage, use_lora=setup.lora, report_to=["none"], disable_tqdm=True, use_cpu=device == "cpu",
            )  # fmt: skip
            trainer = TheWorldTrainer(
                model=model.to(device), args=train_config, train_dataset=data, data_collator=_stack, stage=setup.stage,
                trainable_names=trainable,
            )  # fmt: skip
            trainer.add_callback(Measure())
            trainer.train()
    finally:
        torch.set_num_threads(threads)
    method = "torch.cuda.max_memory_allocated" if device == "cuda" else "torch.profiler memory events, 1 thread"
    return MeasuredPeak(
        peak_bytes=state["start_bytes"] + state["peak_above_start"],
        start_bytes=state["start_bytes"],
        method=method,
        details={"peak_op": state.get("peak_op", ""),
                 "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__},
    )


def saved_tensor_bytes(fn, modules: dict[str, torch.nn.Module], exclude: list[torch.Tensor]) -> dict[str, int]:
    """Bytes autograd saves for backward while `fn()` runs, attributed to the innermost of `modules` running
    when a tensor is first saved ("" outside them). Storages are counted once; `exclude` (the weights) not at all.

    This is what the estimate's per-block formulas predict, exactly and on any CPU: it does not depend
    on the allocator or on kernel scratch memory.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    running: list[str] = [""]
    seen: set[int] = set()
    totals: dict[str, int] = {}
    handles = []

    def enter(name: str):
        return lambda module, args: running.append(name)

    def leave(module, args, output) -> None:
        running.pop()

    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in skip and key not in seen:
            seen.add(key)
            totals[running[-1]] = totals.get(running[-1], 0) + storage.nbytes()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            fn()
    finally:
        for handle in handles:
            handle.remove()
    return totals
