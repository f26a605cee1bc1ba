"""Peak memory of one TheWorld training step, from the config alone.

Nothing is allocated: parameter counts come from TheWorld built on the meta device with the stage
applied by `apply_stage` (the trainer's own function), and activation memory is derived from the
architecture, op by op, as autograd keeps it. The step is modelled as `theworld train` runs it:

* weights: frozen ones in the load dtype (bf16 with `bf16`), trainable ones in fp32 (master copies,
  `cast_trainable_to_fp32`); the VAE encoder only when it runs in the loop (no latent cache);
* gradients: fp32, one per trainable weight, from its backward until the optimizer step (the
  Trainer zeroes them to None after each step);
* optimizer: the Trainer's AdamW (fused), two fp32 states per trainable weight;
* activations: the tensors autograd saves for backward, per block (embeddings, SigLIP layers, the
  world projector, each decoder layer, the loss). Under bf16 autocast a trainable fp32 weight also
  gets a bf16 copy per forward (autocast's cache), held until its backward. With gradient
  checkpointing a layer keeps only its input and is recomputed during backward;
* transients: the largest short-lived tensors inside a block (the MLP's intermediate product,
  attention gradients, the loss's logits and their gradient, the frozen VAE's working tensors).

The peak is found by walking the step in order: forward (saved tensors pile up), loss, backward
(each block's saved tensors are freed as its weight gradients appear), optimizer step.

Where CUDA and CPU kernels keep different tensors, `setup.device` says which to model (LoRA's
dropout keeps a 1-byte mask on CUDA, one of the input's dtype on the CPU). Attention: `sdpa`
(flash / memory-efficient kernels: no score matrix; the bool attention mask becomes a float mask
in every layer) or `eager` (the softmax matrix is kept, in fp32 and in the compute dtype).
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from theworld.errors import TheWorldUserError

FP32 = 4
BF16 = 2
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
DEVICES = ("cuda", "cpu")


@dataclass
class StepSetup:
    """What one training step looks like: stage, batch shape, precision and memory options."""

    stage: str = "align"
    batch_size: int = 1
    seq_len: int = 1024
    """Tokens per sample, image and world blocks included (the collator's padded length)."""
    supervised_tokens: int = 64
    """Answer tokens per sample: the only positions projected to the vocabulary."""
    images: int = 1
    """Gemma images per sample (0 or 1)."""
    world_frames: int = 1
    """Frames per world clip (4k+1); 0 for no world input."""
    latent_cache: bool = False
    """World latents come from `theworld cache-latents`: the VAE is neither loaded nor run."""
    bf16: bool = True
    gradient_checkpointing: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_dropout: float = 0.05
    attn_implementation: str = "sdpa"
    gradient_accumulation_steps: int = 1
    device: str = "cuda"
    """Whose kernels and autocast rules to model: "cuda" (GPU training) or "cpu"."""

    def validate(self) -> None:
        from theworld.training.config import STAGES

        if self.stage not in STAGES:
            raise TheWorldUserError(f"stage: unknown value {self.stage!r} (valid: {', '.join(STAGES)})")
        for key in ("batch_size", "seq_len", "supervised_tokens", "gradient_accumulation_steps", "lora_r"):
            if getattr(self, key) <= 0:
                raise TheWorldUserError(f"{key} must be positive, got {getattr(self, key)}")
        if self.images not in (0, 1):
            raise TheWorldUserError(f"images must be 0 or 1 per sample, got {self.images}")
        if self.world_frames < 0 or (self.world_frames and (self.world_frames - 1) % 4):
            raise TheWorldUserError(f"world_frames must be 0 or 4k+1 (1, 5, 9, 17, ...), got {self.world_frames}")
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise TheWorldUserError(
                f"attn_implementation: {self.attn_implementation!r} is not modelled (valid: {', '.join(ATTENTION_IMPLEMENTATIONS)})"
            )
        if self.device not in DEVICES:
            raise TheWorldUserError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.lora and self.stage not in ("finetune", "full"):
            raise TheWorldUserError(f"lora needs stage finetune or full: stage {self.stage} trains no language model")


@dataclass
class SequenceLayout:
    """Where one sample's `seq_len` tokens go."""

    seq_len: int
    image_tokens: int
    world_tokens: int
    text_tokens: int
    supervised: int


def sequence_layout(config, setup: StepSetup) -> SequenceLayout:
    """BOS, `<start_of_image>` + image tokens + `<end_of_image>`, the world block likewise, then text."""
    image = config.mm_tokens_per_image * setup.images
    world = config.world_tokens_for_frames(setup.world_frames) if (config.enable_world and setup.world_frames) else 0
    blocks = (image + 2 if image else 0) + (world + 2 if world else 0)
    text = setup.seq_len - 1 - blocks
    if text < setup.supervised_tokens + 1:
        raise TheWorldUserError(
            f"seq_len={setup.seq_len} leaves {text} text tokens after BOS, {image} image and {world} world tokens "
            f"(+ their markers): too few for {setup.supervised_tokens} supervised tokens and a prompt; raise --seq-len"
        )
    return SequenceLayout(setup.seq_len, image, world, text, setup.supervised_tokens)


# ------------------------------------------------------------------------------------------------
# sizes and parameters


@dataclass
class _Dims:
    """The sizes the formulas use, read from the config."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    layer_types: list[str]
    v_hidden: int
    v_intermediate: int
    v_heads: int
    v_layers: int
    patches: int
    image_size: int
    patch_size: int
    mm_tokens: int

    @classmethod
    def of(cls, config) -> _Dims:
        t, v = config.text_config, config.vision_config
        return cls(
            hidden=t.hidden_size, intermediate=t.intermediate_size, heads=t.num_attention_heads,
            kv_heads=t.num_key_value_heads, head_dim=t.head_dim, layers=t.num_hidden_layers, vocab=t.vocab_size,
            layer_types=list(t.layer_types), v_hidden=v.hidden_size, v_intermediate=v.intermediate_size,
            v_heads=v.num_attention_heads, v_layers=v.num_hidden_layers,
            patches=(v.image_size // v.patch_size) ** 2, image_size=v.image_size, patch_size=v.patch_size,
            mm_tokens=config.mm_tokens_per_image,
        )  # fmt: skip


def _part(name: str) -> str:
    """The block a parameter belongs to (decoder and SigLIP layers one by one)."""
    layer = re.match(r"model\.language_model\.layers\.(\d+)\.(\w+)", name)
    if layer:
        half = "mlp" if layer[2] in ("mlp", "pre_feedforward_layernorm", "post_feedforward_layernorm") else "attention"
        return f"layer.{layer[1]}.{half}"
    if name.startswith(("model.language_model.", "lm_head.")):
        return "language_model"
    vision_layer = re.match(r"model\.vision_tower\..*layers\.(\d+)\.", name)
    if vision_layer:
        return f"vision.layer.{vision_layer[1]}"
    if name.startswith("model.vision_tower.") and ".embeddings." in name:
        return "vision.embeddings"
    if name.startswith(("model.vision_tower.", "model.multi_modal_projector.")):
        return "vision.head"
    if name.startswith("world_projector."):
        return "world_projector"
    if name.startswith("world_encoder."):
        return "vae_encoder"
    return "other"


def _is_matmul_module(module: torch.nn.Module) -> bool:
    return isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))


def parameter_census(config, setup: StepSetup, vae_config: dict | None = None) -> dict[str, Any]:
    """See `_census`; cached per (config, stage, LoRA, VAE): the batch shape does not change it."""
    key = (config.to_json_string(), setup.stage, setup.lora, setup.lora_r, setup.lora_dropout, setup.latent_cache,
           json.dumps(vae_config or {}, sort_keys=True))  # fmt: skip
    return copy.deepcopy(_cached_census(*key))


@functools.lru_cache(maxsize=32)
def _cached_census(config_json: str, stage: str, lora: bool, lora_r: int, lora_dropout: float, latent_cache: bool,
                   vae_json: str) -> dict[str, Any]:
    from theworld.model.configuration import TheWorldConfig

    config = TheWorldConfig.from_dict(json.loads(config_json))
    setup = StepSetup(stage=stage, lora=lora, lora_r=lora_r, lora_dropout=lora_dropout, latent_cache=latent_cache)
    return _census(config, setup, json.loads(vae_json))


def _census(config, setup: StepSetup, vae_config: dict | None = None) -> dict[str, Any]:
    """Parameters per part, trainable or frozen: TheWorld built on the meta device (no memory), the stage
    applied by `apply_stage` itself.

    Also which trainable weights autocast copies to bf16: every weight of a linear / convolution
    layer gets a copy, cached until the forward ends; it is also saved for backward when the layer's
    input gradient needs it, i.e. for every weight except the world projector's first linear (its
    input, the latents, needs no gradient; a convolution saves its weight regardless). Bias copies
    are never saved.
    """
    from theworld.model.modeling import TheWorld
    from theworld.training.stages import LoraSettings, apply_stage

    with torch.device("meta"):
        model = TheWorld(config)
        if config.enable_world and not setup.latent_cache:
            from diffusers import AutoencoderKLWan

            from theworld.world_encoder.vae import CosmosWorldEncoder

            vae = AutoencoderKLWan(**(vae_config or {}))
            vae.decoder = None
            vae.post_quant_conv = None
            model.attach_world_encoder(CosmosWorldEncoder(vae))
    stage_logger = logging.getLogger("theworld.training.stages")
    level = stage_logger.level
    stage_logger.setLevel(logging.WARNING)  # apply_stage's "N trainable tensors" line is noise here
    try:
        lora = LoraSettings(r=setup.lora_r, alpha=2 * setup.lora_r, dropout=setup.lora_dropout)
        apply_stage(model, setup.stage, use_lora=setup.lora, lora=lora)
    finally:
        stage_logger.setLevel(level)

    parts: dict[str, dict[str, int]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        entry = parts.setdefault(_part(name), {"trainable": 0, "frozen": 0, "cast_saved": 0, "cast_cached": 0})
        entry["trainable" if param.requires_grad else "frozen"] += param.numel()
    for name, module in model.named_modules():
        if not (_is_matmul_module(module) and module.weight.requires_grad):
            continue
        entry = parts[_part(name + ".weight")]
        entry["cast_cached" if name == "world_projector.proj.0" else "cast_saved"] += module.weight.numel()
        entry["cast_cached"] += module.bias.numel() if module.bias is not None else 0
    mm = model.model.multi_modal_projector.mm_input_projection_weight
    if mm.requires_grad:
        parts["vision.head"]["cast_saved"] += mm.numel()
    lora_targets = []
    if setup.lora:
        from peft.tuners.lora import LoraLayer

        first = model.model.language_model.layers[0]
        lora_targets = [(name, m.in_features) for name, m in first.named_modules() if isinstance(m, LoraLayer)]
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return {"parts": parts, "buffer_bytes": buffers, "lora_inputs": lora_targets}


# ------------------------------------------------------------------------------------------------
# activations, derived op by op (bytes for the whole micro-batch)


def _rms_norm(tokens: int, width: int, trains_weight: bool) -> int:
    """Gemma's RMSNorm computes in fp32 and saves x.float(), rsqrt, (1 + weight) (a new (width,) tensor per
    call), and the normalised x when its weight trains."""
    saved = tokens * width * FP32 + tokens * FP32 + width * FP32
    if trains_weight:
        saved += tokens * width * FP32
    return saved


def gemma_layer(d: _Dims, batch: int, seq: int, *, c: int, s: int, lm: str, attn: str, device: str,
                lora_inputs: list[tuple[str, int]], lora_r: int, lora_dropout: float) -> dict[str, int]:
    """Saved bytes of one Gemma 3 decoder layer by term, "attention: ..." and "mlp: ..." (the two halves
    its backward frees in turn; weight copies excluded). `lm` is "frozen", "full" or "lora".

    c: bytes of the compute dtype (2 under bf16 autocast); s: bytes of the residual stream (fp32
    when the embedding trains in fp32, else the load dtype). A frozen layer still saves what its
    input gradient needs: gradients flow through it to the world tokens.
    """
    T = batch * seq
    h, i, H, KV, D = d.hidden, d.intermediate, d.heads, d.kv_heads, d.head_dim
    full = lm == "full"
    terms = {
        # input and post-attention RMSNorms; q_norm / k_norm over head_dim
        "attention: norms": 2 * _rms_norm(T, h, full) + _rms_norm(T * H, D, full) + _rms_norm(T * KV, D, full),
        # pre- and post-feedforward RMSNorms
        "mlp: norms": 2 * _rms_norm(T, h, full),
    }
    if attn == "sdpa":
        # q (after rope), k and v repeated to all heads (GQA is expanded when there is a mask), the
        # output and its log-sum-exp; the bool mask becomes an additive mask of q's dtype per layer
        terms["attention: core"] = 4 * T * H * D * c + T * H * FP32 + batch * seq * seq * c
    else:
        # eager: q, k, v and softmax(scores) in fp32 and cast back to the compute dtype
        probs = batch * H * seq * seq
        terms["attention: core"] = 3 * T * H * D * c + probs * FP32 + (probs * c if c != FP32 else 0)
    # gate and up outputs and gelu(gate), for the product's and gelu's backward
    terms["mlp: activations"] = 3 * T * i * c
    if full:
        # inputs of the linear layers (for weight gradients). Under autocast a fp32 input is cast per
        # layer (q, k, v each get a copy; gate, up too); an input already in the compute dtype is shared.
        copies_qkv, copies_mlp = (3, 2) if c < s else (1, 1)
        terms["attention: linear inputs"] = copies_qkv * T * h * c
        if attn == "eager":
            terms["attention: linear inputs"] += T * H * D * c  # o_proj's input is a copy (sdpa's output is reused)
        terms["mlp: linear inputs"] = copies_mlp * T * h * c + T * i * c
    elif lm == "lora":
        # per adapted layer: dropout's mask (1-byte on CUDA, the input's dtype on the CPU), lora_A's
        # input (cast to the compute dtype), lora_B's input (rank r)
        mask = 0 if lora_dropout == 0 else (1 if device == "cuda" else FP32)
        for half in ("attention", "mlp"):
            inputs = [n for name, n in lora_inputs if (name.startswith("mlp.") == (half == "mlp"))]
            terms[f"{half}: lora"] = sum(T * n * (c + mask) + T * lora_r * c for n in inputs)
    return terms


def _half(terms: dict[str, int], half: str) -> int:
    return sum(v for k, v in terms.items() if k.startswith(half + ":"))


def gemma_layer_extras(d: _Dims, batch: int, seq: int, *, c: int, s: int, attn: str,
                       lora_inputs: list[tuple[str, int]]) -> dict[str, tuple[int, int]]:
    """Short-lived tensors of each half of a decoder layer: (forward, backward).

    Forward: the residual stream, and the MLP's product or the attention's projections (eager: the
    masked scores next to softmax's output). Backward: the activation gradients alive at once.
    """
    T = batch * seq
    stream = 2 * T * d.hidden * s
    probs = batch * d.heads * seq * seq
    upcast = c if c < FP32 else 0  # an extra fp32 copy exists only under autocast
    attention_fwd = 2 * T * d.heads * d.head_dim * max(c, s) + stream
    attention_bwd = 4 * T * d.heads * d.head_dim * c + stream
    if attn == "eager":
        attention_fwd += probs * (FP32 + upcast)
        # the probabilities' gradient and softmax's (fp32), and the cast back under autocast
        attention_bwd += probs * (2 * FP32 + upcast)
    mlp_fwd = T * d.intermediate * c + stream
    mlp_bwd = 3 * T * d.intermediate * c + stream
    if lora_inputs:
        # LoRA on down_proj: its input gradient through lora_A, the fp32 cast and dropout, next to the
        # base layer's own
        mlp_bwd = max(mlp_bwd, T * d.intermediate * (2 * c + FP32 + upcast) + stream)
    return {"attention": (attention_fwd, attention_bwd), "mlp": (mlp_fwd, mlp_bwd)}


def siglip_layer(d: _Dims, images: int, *, c: int, attn: str) -> int:
    """Saved bytes of one trainable SigLIP encoder layer (weight copies excluded). Its residual stream is
    fp32 (the position embedding trains in fp32), so each linear casts its input under autocast."""
    P = images * d.patches
    hv, iv = d.v_hidden, d.v_intermediate
    saved = 2 * (P * hv * FP32 + 2 * P * FP32)  # two LayerNorms: input, mean, rstd
    saved += (4 if c < FP32 else 1) * P * hv * c  # inputs of q, k, v and fc1 (one shared input in fp32)
    if c == FP32:
        saved += P * hv * c  # fc1's input is layer_norm2's output, not shared with q/k/v
    if attn == "sdpa":
        saved += 4 * P * hv * c + P * d.v_heads * FP32  # q, k, v, output, log-sum-exp
    else:
        probs = images * d.v_heads * d.patches**2
        saved += 3 * P * hv * c + probs * FP32 + (probs * c if c != FP32 else 0) + P * hv * c
    saved += 2 * P * iv * c  # gelu's input (fc1 output), fc2's input
    return saved


def siglip_extras(d: _Dims, images: int, *, c: int) -> tuple[int, int]:
    """Short-lived tensors of a SigLIP layer: forward (LayerNorm output, stream) and backward."""
    P = images * d.patches
    forward = P * d.v_intermediate * c + 2 * P * d.v_hidden * FP32
    backward = 2 * P * d.v_intermediate * c + 2 * P * d.v_hidden * FP32
    return forward, backward


def world_projector_saved(config, n_world_tokens: int, *, c: int) -> int:
    """Linear -> GELU -> Linear -> RMS scale: both linears' inputs, gelu's input, the projected tokens,
    the normalised ones, and the fp32 copy and rsqrt of the RMS."""
    h = config.text_config.hidden_size
    in_dim = config.world_latent_channels * config.world_patch_size**2
    mlp = config.world_projector_type == "mlp"
    per_token = in_dim * c + (3 if mlp else 1) * h * c + h * c + FP32
    if c < FP32:
        per_token += h * FP32 + BF16  # x.float() for the RMS, and rsqrt cast back
    return n_world_tokens * per_token


def _vae_settings(vae_config: dict | None) -> dict[str, Any]:
    from diffusers import AutoencoderKLWan

    signature = inspect.signature(AutoencoderKLWan.__init__)
    defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **(vae_config or {})}


def vae_encode_peak(vae_config: dict | None, batch: int, frames: int, size: int, c: int) -> int:
    """Working memory of the frozen Wan VAE encoder (no gradients): its causal feature cache plus the
    tensors of the first full-resolution residual block, for the largest temporal chunk.

    The encoder runs a clip in chunks (1 frame, then 4 at a time); each causal convolution keeps
    the last (up to 2) frames of its input for the next chunk, for the whole encode. Convolution
    scratch memory (CPU im2col buffers, cuDNN workspaces) is not modelled.
    """
    cfg = _vae_settings(vae_config)
    base, mult, blocks = cfg["base_dim"], list(cfg["dim_mult"]), cfg["num_res_blocks"]
    dims = [base * m for m in [1] + mult]
    chunk = 1 if frames == 1 else 4
    kept = min(chunk, 2)
    side = size
    cache = 3 * kept * side * side  # conv_in's input frames
    for level, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        for b in range(blocks):
            cache += (d_in if b == 0 else d_out) * kept * side * side + d_out * kept * side * side
        if level != len(mult) - 1:
            side //= 2
            if cfg["temperal_downsample"][level]:
                cache += d_out * side * side
    cache += 5 * dims[-1] * kept * side * side  # mid block (2 residual blocks) and the output conv
    cache *= batch * c
    # the first full-resolution residual block: its input (kept for the shortcut), the fp32 norm
    # (input upcast and normalised), then the convolution's padded input (2 cached or zero frames)
    unit = batch * base * chunk * size * size
    norm = unit * c + 2 * unit * FP32 if c < FP32 else 2 * unit * c
    conv = 2 * unit * c + batch * base * (chunk + 2) * (size + 2) ** 2 * c + unit * c
    return cache + max(norm, conv)


# ------------------------------------------------------------------------------------------------
# the step: blocks in forward order, walked forward and backward


@dataclass
class Block:
    """One piece of the forward pass, as the memory walk sees it (bytes for the whole micro-batch)."""

    name: str
    kind: str
    """The activations row it belongs to: "language model", "vision tower", "world projector", "loss"."""
    saved: int = 0
    """Activations kept from its forward to its backward."""
    casts: int = 0
    """bf16 copies of trainable weights kept from its forward to its backward (autocast)."""
    forward_extra: int = 0
    """Short-lived tensors while its forward runs."""
    forward_held: int = 0
    """Created here, alive until the forward ends, not needed by backward (masks, autocast's cache)."""
    backward_extra: int = 0
    """Short-lived tensors (activation gradients, recomputed activations) while its backward runs."""
    grads: int = 0
    """Weight gradients its backward creates (fp32, held until the optimizer step)."""


@dataclass
class Row:
    component: str
    size: int
    """The component's own size (for transient ones: their largest moment)."""
    at_peak: int
    """What of it is alive at the step's peak."""
    note: str = ""


@dataclass
class MemoryEstimate:
    setup: StepSetup
    layout: SequenceLayout
    rows: list[Row]
    peak_bytes: int
    peak_phase: str
    blocks: list[Block] = field(default_factory=list)
    parameters: dict[str, int] = field(default_factory=dict)
    per_layer: dict[str, int] = field(default_factory=dict)

    def row(self, component: str) -> Row:
        return next(r for r in self.rows if r.component == component)

    def table(self, unit: str = "GiB") -> str:
        """The rows and the total as a Markdown table."""
        scale = {"GiB": 2**30, "MiB": 2**20}[unit]
        lines = [f"| component | size ({unit}) | at the peak ({unit}) | note |", "|---|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r.component} | {r.size / scale:,.2f} | {r.at_peak / scale:,.2f} | {r.note} |")
        lines.append(f"| **total (peak)** | | **{self.peak_bytes / scale:,.2f}** | at {self.peak_phase} |")
        return "\n".join(lines)


def _blocks(config, setup: StepSetup, layout: SequenceLayout, d: _Dims, census: dict,
            vae_config: dict | None) -> tuple[list[Block], dict[str, int]]:
    """The step's blocks in forward order, and one decoder layer's saved bytes by term."""
    parts = census["parts"]
    B, L = setup.batch_size, setup.seq_len
    T, K = B * L, B * layout.supervised
    c = BF16 if setup.bf16 else FP32  # compute dtype (autocast)
    lm_mode = "lora" if setup.lora else ("full" if setup.stage in ("finetune", "full") else "frozen")
    embedding_trains = lm_mode == "full"
    s = FP32 if (embedding_trains or not setup.bf16) else BF16  # the language model's residual stream
    ckpt = setup.gradient_checkpointing
    images = B * setup.images
    world_items = B if layout.world_tokens else 0

    def trainable(part: str) -> int:
        return parts.get(part, {}).get("trainable", 0)

    def casts(part: str, kind: str = "cast_saved") -> int:
        return parts.get(part, {}).get(kind, 0) * BF16 if setup.bf16 else 0

    blocks: list[Block] = []
    # text embeddings (B, L, hidden); image and world features are scattered in (a new copy each).
    # Saved: the token ids (when the embedding trains) and the scatter masks (one byte per token).
    blocks.append(Block(
        "embeddings", "language model", saved=(T * 8 if embedding_trains else 0) + T * (bool(images) + bool(world_items)),
        forward_extra=2 * T * d.hidden * s,
        # a bf16 stream's embeddings are held by TheWorld.forward until the LM returns (fp32 ones are saved)
        forward_held=T * d.hidden * s if s < FP32 else 0,
        # the embedding's gradient is dense (vocab x hidden, fp32) until it is added to the tied LM head's
        backward_extra=(d.vocab * d.hidden * FP32 if embedding_trains else 0) + 2 * T * d.hidden * s,
    ))  # fmt: skip
    if images:
        P = images * d.patches
        fwd, bwd = siglip_extras(d, images, c=c)
        if setup.stage in ("vision", "full"):
            patch_conv = casts("vision.embeddings")  # a convolution saves its (cast) weight
            blocks.append(Block("vision embeddings", "vision tower", saved=images * 3 * d.image_size**2 * c,
                                casts=patch_conv, forward_held=casts("vision.embeddings", "cast_cached"),
                                forward_extra=2 * P * d.v_hidden * FP32, backward_extra=2 * P * d.v_hidden * FP32,
                                grads=trainable("vision.embeddings") * FP32))  # fmt: skip
            v_layer = siglip_layer(d, images, c=c, attn=setup.attn_implementation)
            for index in range(d.v_layers):
                part = f"vision.layer.{index}"
                if ckpt:  # keeps its input; recomputed during its backward
                    blocks.append(Block(f"vision layer {index}", "vision tower", saved=P * d.v_hidden * FP32,
                                        forward_extra=fwd + v_layer, forward_held=casts(part) + casts(part, "cast_cached"),
                                        backward_extra=bwd + v_layer + casts(part), grads=trainable(part) * FP32))  # fmt: skip
                else:
                    blocks.append(Block(f"vision layer {index}", "vision tower", saved=v_layer, casts=casts(part),
                                        forward_held=casts(part, "cast_cached"), forward_extra=fwd, backward_extra=bwd,
                                        grads=trainable(part) * FP32))  # fmt: skip
            # post-LayerNorm; projector: the average pool's input (a contiguous fp32 copy), Gemma's
            # RMSNorm, the projection (its cast input and weight)
            n_mm = images * d.mm_tokens
            head = 2 * P * d.v_hidden * FP32 + 2 * P * FP32 + _rms_norm(n_mm, d.v_hidden, True) + n_mm * d.v_hidden * c
            blocks.append(Block("vision post-norm + projector", "vision tower", saved=head, casts=casts("vision.head"),
                                forward_held=casts("vision.head", "cast_cached"), forward_extra=P * d.v_hidden * FP32,
                                backward_extra=2 * P * d.v_hidden * FP32, grads=trainable("vision.head") * FP32))  # fmt: skip
        else:
            # frozen: no gradient, nothing kept; only its working tensors while it runs
            blocks.append(Block("vision tower (frozen)", "vision tower",
                                forward_extra=fwd + images * 3 * d.image_size**2 * c + images * d.mm_tokens * d.hidden * c))  # fmt: skip
    if world_items:
        n_world = world_items * layout.world_tokens
        latent_side = config.world_image_size // config.world_spatial_compression
        latents = world_items * config.world_latent_channels * config.world_latent_frames(setup.world_frames) * latent_side**2
        vae = 0
        if not setup.latent_cache:
            w_frozen = BF16 if setup.bf16 else FP32
            vae = vae_encode_peak(vae_config, world_items, setup.world_frames, config.world_image_size, w_frozen)
        name = "world projector" if setup.latent_cache else "VAE encoder + world projector"
        blocks.append(Block(name, "world projector", saved=world_projector_saved(config, n_world, c=c),
                            casts=casts("world_projector"), forward_held=casts("world_projector", "cast_cached"),
                            forward_extra=max(vae, 2 * latents * FP32 + 2 * n_world * d.hidden * FP32),
                            backward_extra=2 * n_world * d.hidden * FP32, grads=trainable("world_projector") * FP32))  # fmt: skip
    # attention masks (bool for sdpa, float for eager; one per layer type, alive through the LM's
    # forward) and the rotary cos/sin tables (saved)
    kinds = len(set(d.layer_types))
    masks = kinds * B * L * L * (1 if setup.attn_implementation == "sdpa" else s)
    blocks.append(Block("masks and rotary tables", "language model", saved=kinds * 2 * L * d.head_dim * s,
                        forward_held=masks, forward_extra=masks))  # fmt: skip
    terms = gemma_layer(d, B, L, c=c, s=s, lm=lm_mode, attn=setup.attn_implementation, device=setup.device,
                        lora_inputs=census["lora_inputs"], lora_r=setup.lora_r, lora_dropout=setup.lora_dropout)  # fmt: skip
    extras = gemma_layer_extras(d, B, L, c=c, s=s, attn=setup.attn_implementation, lora_inputs=census["lora_inputs"])
    layer_saved = sum(terms.values())
    for index in range(d.layers):
        if ckpt:
            # checkpointed: only the layer's input stays; its activations (and weight copies) are
            # recomputed at the start of its backward. Autocast's cache keeps the copies until the forward ends.
            parts_ = [f"layer.{index}.attention", f"layer.{index}.mlp"]
            layer_casts = sum(casts(p) for p in parts_)
            fwd = max(f for f, _ in extras.values())
            blocks.append(Block(f"decoder layer {index}", "language model", saved=T * d.hidden * s,
                                forward_extra=fwd + 2 * T * d.intermediate * c,
                                forward_held=sum(casts(p) + casts(p, "cast_cached") for p in parts_),
                                backward_extra=extras["mlp"][1] + layer_saved + layer_casts,
                                grads=sum(trainable(p) for p in parts_) * FP32))  # fmt: skip
            continue
        for half in ("attention", "mlp"):
            part = f"layer.{index}.{half}"
            fwd, bwd = extras[half]
            blocks.append(Block(f"decoder layer {index} {half}", "language model", saved=_half(terms, half),
                                casts=casts(part), forward_held=casts(part, "cast_cached"), forward_extra=fwd,
                                backward_extra=bwd, grads=trainable(part) * FP32))  # fmt: skip
    # final norm, the supervised positions' hidden states (the index op saves its bool mask), the LM
    # head (tied to the embedding; frozen: nothing saved). Under bf16, accelerate casts the model's
    # output logits to fp32 (both copies exist for a moment).
    logits = K * d.vocab
    blocks.append(Block("final norm + LM head", "language model",
                        saved=_rms_norm(T, d.hidden, embedding_trains) + T + (K * d.hidden * c if embedding_trains else 0),
                        casts=casts("language_model"),
                        forward_extra=logits * (c + FP32) if c < FP32 else logits * FP32,
                        backward_extra=logits * (FP32 + (c if c < FP32 else 0))
                        + (d.vocab * d.hidden * BF16 if embedding_trains and setup.bf16 else 0),
                        grads=trainable("language_model") * FP32))  # fmt: skip
    # the loss keeps log_softmax of the fp32 logits (and the targets); in backward the gradients of
    # log_softmax's output and of its input are alive together
    blocks.append(Block("loss", "loss", saved=logits * FP32 + K * 8, forward_extra=logits * FP32,
                        backward_extra=2 * logits * FP32))  # fmt: skip
    per_layer = {"saved": layer_saved, "weight copies": casts("layer.0.attention") + casts("layer.0.mlp"),
                 "checkpointed": T * d.hidden * s, **terms}  # fmt: skip
    return blocks, per_layer


def estimate_memory(config, setup: StepSetup, vae_config: dict | None = None) -> MemoryEstimate:
    """Peak memory of one training step of `config` (a TheWorldConfig) under `setup`; see the module docstring."""
    setup.validate()
    if setup.stage == "align" and not config.enable_world:
        raise TheWorldUserError("stage align trains only the world projector, and this model has enable_world=False")
    layout = sequence_layout(config, setup)
    d = _Dims.of(config)
    census = parameter_census(config, setup, vae_config)
    parts = census["parts"]
    blocks, per_layer = _blocks(config, setup, layout, d, census, vae_config)
    B, T = setup.batch_size, setup.batch_size * setup.seq_len
    frozen_bytes = BF16 if setup.bf16 else FP32

    # ---- held for the whole step -----------------------------------------------------------------
    def weights(names: list[str]) -> int:
        return sum(parts[n]["trainable"] * FP32 + parts[n]["frozen"] * frozen_bytes for n in names if n in parts)

    groups = {
        "language model": [p for p in parts if p == "language_model" or p.startswith("layer.")],
        "vision tower + multi-modal projector": [p for p in parts if p.startswith("vision.")],
        "world projector": ["world_projector"],
        "VAE encoder": ["vae_encoder"],
    }
    trainable = sum(p["trainable"] for p in parts.values())
    images = B * setup.images
    inputs = 4 * T * 8 + images * 3 * d.image_size**2 * FP32
    if layout.world_tokens:
        side = config.world_image_size
        if setup.latent_cache:
            frames = config.world_latent_frames(setup.world_frames)
            inputs += B * config.world_latent_channels * frames * (side // config.world_spatial_compression) ** 2 * FP32
        else:
            inputs += B * 3 * setup.world_frames * side * side * FP32
    resident = {f"weights: {g}": weights(names) for g, names in groups.items() if weights(names)}
    resident["buffers"] = census["buffer_bytes"]
    resident["optimizer states"] = 2 * trainable * FP32
    resident["inputs (the batch)"] = inputs
    accumulating = setup.gradient_accumulation_steps > 1
    if accumulating:
        resident["gradients"] = trainable * FP32

    # ---- walk the step, keeping what is alive at the peak ----------------------------------------
    best: dict[str, Any] = {"total": -1}

    def see(where: str, alive: dict[str, int]) -> None:
        total = sum(resident.values()) + sum(alive.values())
        if total > best["total"]:
            best.update(total=total, where=where, alive=dict(alive))

    saved: dict[str, int] = {}
    held_casts = forward_only = 0
    for block in blocks:
        now = dict(saved)
        now[block.kind] = now.get(block.kind, 0) + block.saved
        see(f"forward, {block.name}", {**{f"activations: {k}": v for k, v in now.items()},
                                       "autocast weight copies": held_casts + block.casts,
                                       "forward-only tensors (masks, autocast cache)": forward_only + block.forward_held,
                                       "working memory": block.forward_extra})  # fmt: skip
        saved = now
        held_casts += block.casts
        forward_only += block.forward_held
    largest_saved, cast_total, forward_only_total = dict(saved), held_casts, forward_only
    grads = 0
    for block in reversed(blocks):
        new = 0 if accumulating else block.grads
        see(f"backward, {block.name}", {**{f"activations: {k}": v for k, v in saved.items()},
                                        "autocast weight copies": held_casts, "gradients": grads + new,
                                        "working memory": block.backward_extra})  # fmt: skip
        saved[block.kind] -= block.saved
        held_casts -= block.casts
        grads += new
    see("optimizer step", {"gradients": 0 if accumulating else trainable * FP32})

    # ---- the table ------------------------------------------------------------------------------
    alive = best["alive"]
    notes = _notes(config, setup, layout, d, parts, per_layer)
    rows = [Row(name, size, size, notes.get(name, "")) for name, size in resident.items()]
    if not accumulating:
        rows.append(Row("gradients", trainable * FP32, alive.get("gradients", 0), notes["gradients"]))
    if cast_total:
        rows.append(Row("autocast weight copies", cast_total, alive.get("autocast weight copies", 0),
                        "bf16 copies of the trainable fp32 weights, from their forward to their backward"))  # fmt: skip
    for kind in ("language model", "vision tower", "world projector", "loss"):
        if kind in largest_saved:
            name = f"activations: {kind}"
            size = largest_saved[kind]
            if kind == "vision tower" and not size:
                size = next(b.forward_extra for b in blocks if b.kind == "vision tower")
            rows.append(Row(name, size, alive.get(name, 0), notes.get(name, "")))
    if layout.world_tokens:
        vae = 0 if setup.latent_cache else vae_encode_peak(vae_config, B, setup.world_frames, config.world_image_size,
                                                           frozen_bytes)  # fmt: skip
        rows.append(Row("VAE encoder working memory", vae, 0, notes["vae"]))
    rows.append(Row("masks, autocast cache", forward_only_total,
                    alive.get("forward-only tensors (masks, autocast cache)", 0),
                    "attention masks, the embeddings and bias copies kept until the forward ends"))  # fmt: skip
    rows.append(Row("working memory at the peak", alive.get("working memory", 0), alive.get("working memory", 0),
                    f"short-lived tensors of {best['where'].split(', ', 1)[1]}"))  # fmt: skip
    return MemoryEstimate(
        setup=setup, layout=layout, rows=rows, peak_bytes=best["total"], peak_phase=best["where"], blocks=blocks,
        parameters={"trainable": trainable, "total": sum(p["trainable"] + p["frozen"] for p in parts.values())},
        per_layer=per_layer,
    )  # fmt: skip


def _notes(config, setup: StepSetup, layout: SequenceLayout, d: _Dims, parts: dict, per_layer: dict) -> dict[str, str]:
    frozen = "bf16" if setup.bf16 else "fp32"

    def params(prefixes: tuple[str, ...]) -> str:
        names = [n for n in parts if n.startswith(prefixes)]
        train = sum(parts[n]["trainable"] for n in names)
        total = train + sum(parts[n]["frozen"] for n in names)
        return f"{total:,} parameters" + (f", {train:,} train (fp32)" if train else "") + (
            f", frozen in {frozen}" if total > train else "")  # fmt: skip

    trainable = sum(p["trainable"] for p in parts.values())
    ckpt = setup.gradient_checkpointing
    mib = lambda n: f"{n / 2**20:,.0f} MiB"  # noqa: E731
    layer = per_layer["saved"] + per_layer["weight copies"]
    notes = {
        "weights: language model": params(("language_model", "layer.")),
        "weights: vision tower + multi-modal projector": params(("vision.",)),
        "weights: world projector": params(("world_projector",)),
        "weights: VAE encoder": params(("vae_encoder",)) + " (the decoder is never loaded)",
        "buffers": "rotary tables, embedding scale, VAE latent statistics",
        "optimizer states": "AdamW (fused): exp_avg and exp_avg_sq in fp32 per trainable parameter",
        "inputs (the batch)": "token ids, masks, labels, pixels" + (
            ", cached latents" if setup.latent_cache else ", world pixels"),  # fmt: skip
        "gradients": f"fp32, {trainable:,} trainable parameters",
        "activations: language model": (
            (f"gradient checkpointing: {d.layers} layers x {mib(per_layer['checkpointed'])} (each keeps its input; "
             f"one layer's {mib(layer)} is recomputed at a time)" if ckpt else
             f"{d.layers} layers x {mib(layer)} ({mib(per_layer['checkpointed'])} per layer with gradient checkpointing)")
            + f"; {setup.batch_size} x {setup.seq_len} tokens per step ({layout.image_tokens} image, "
            f"{layout.world_tokens} world per sample)"
        ),
        "activations: vision tower": (
            f"{setup.batch_size * setup.images} images x {d.patches} patches, {d.v_layers} layers"
            + ("" if setup.stage in ("vision", "full") else "; frozen: working memory only while it runs")
        ),
        "activations: world projector": f"{setup.batch_size * layout.world_tokens:,} world tokens",
        "activations: loss": f"log-softmax of {setup.batch_size * layout.supervised:,} supervised positions x "
        f"{d.vocab:,} (fp32): only supervised positions get logits",
        "vae": "not run: latents come from the cache" if setup.latent_cache else
        f"frozen, no gradient: {setup.batch_size} clips x {setup.world_frames} frames at {config.world_image_size} px, "
        "while it encodes (convolution scratch not modelled)",
    }  # fmt: skip
    return notes
