"""`theworld train-world-model`: post-train the Cosmos DiT on your clips (or train a small one from scratch).

World models are adapted to a domain by post-training the DiT on that domain's videos. This
trains `CosmosTransformer3DModel` with the objective and preconditioning that the rollout
sampler (the pipeline's) assumes, so a trained DiT drops into `WorldModel` and into
`Cosmos2VideoToWorldPipeline` unchanged:

- latents are the world encoder's normalisation; conditioning frames (the observed clip) are a
  *sample* of the VAE posterior (mean + std * noise), as the pipeline's `prepare_latents` draws
  them, clean, at t = 1e-4 / (1 + 1e-4), marked by the condition-mask channel;
- each clip draws sigma (log-normal) and noise; with t = sigma / (1 + sigma) the DiT sees
  (1 - t) x0 + t eps on the frames to predict (the pipeline's c_in (x0 + sigma eps)), a per-frame
  timestep (B, 1, T, 1, 1), and the fixed prompt's T5 embeddings;
- the pipeline's estimate of x0 is c_skip x + c_out F = (1 - t)(x0 + sigma eps) - t F, which is
  x0 exactly when F = eps - x0: the target is v = eps - x0 (rectified flow in EDM form), MSE over
  the predicted frames.

Training runs through transformers' `Trainer` like `theworld train`: the same staged (atomic)
checkpoints, resume (optimizer, scheduler, RNG, data position; this module's noise is keyed by
(seed, step, micro-batch, rank), so a resumed run draws what a straight run draws), progress bar
and Accelerate scale-out. Settings are `WorldModelTrainingArguments`: `TrainingArguments` plus
the world-model fields, read from YAML/JSON with `--key value` overrides by `HfArgumentParser`.
The output folder is a Cosmos repo in diffusers' layout (the trained `transformer/` next to the
base repo's `scheduler/`, `vae/`, `text_encoder/`, `tokenizer/`), so `WorldModel.from_pretrained`
and `Cosmos2VideoToWorldPipeline.from_pretrained` load it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from theworld.errors import TheWorldUserError
from theworld.training.checkpoint_io import verify_checkpoint
from theworld.training.trainer import AtomicCheckpoints, TheWorldProgressCallback
from theworld.world_model.latents import WorldLatents, encode_clips
from theworld.world_model.model import resolve_world_model_folder
from theworld.world_model.sampler import SIGMA_CONDITIONING, check_rollout_input, latent_frames
from theworld.world_model.settings import PIPELINE_FPS, PIPELINE_MAX_SEQUENCE_LENGTH, RolloutSettings
from theworld.world_model.text import WorldTextCondition, encode_text_condition

logger = logging.getLogger(__name__)

TRAINING_INFO_NAME = "theworld_world_model.json"
LATENTS_NAME = "world_latents.safetensors"
EMA_NAME = "ema.safetensors"
COPIED_PARTS = ("scheduler", "vae", "text_encoder", "tokenizer")


@dataclass
class WorldModelTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus what a world-model (DiT) training run needs. Keys: docs/rollout.md."""

    cosmos_model_name: str | None = field(
        default=None, metadata={"help": "Cosmos repo (folder or hub id): its vae/, scheduler/, T5 and (to fine-tune) transformer/"}
    )
    transformer_config: str | None = field(
        default=None,
        metadata={"help": "JSON file of CosmosTransformer3DModel settings: train a new DiT from scratch. "
                          "Unset: fine-tune cosmos_model_name's transformer/"},
    )  # fmt: skip
    train_data: str | None = field(
        default=None, metadata={"help": "clips (a TheWorld data file whose samples hold videos) or a world latents .safetensors"}
    )
    train_data_format: str = field(default="auto", metadata={"help": "format of a clips data file"})
    image_folder: str | None = field(default=None, metadata={"help": "folder for relative frame paths"})
    world_image_size: int = field(default=512, metadata={"help": "frames are resized to this square size"})
    observed_frames: int = field(default=9, metadata={"help": "frames the rollout is conditioned on (4k+1)"})
    rollout_frames: int = field(default=1, metadata={"help": "K: latent frames to predict (4K video frames)"})
    prompt: str = field(default="", metadata={"help": "the fixed text condition (as the world model's)"})
    max_sequence_length: int = field(default=PIPELINE_MAX_SEQUENCE_LENGTH, metadata={"help": "T5 tokens"})
    fps: int = field(default=PIPELINE_FPS, metadata={"help": "fps given to the DiT (the pipeline's 16)"})
    sigma_log_mean: float = field(default=0.0, metadata={"help": "training sigmas: log sigma ~ N(mean, std)"})
    sigma_log_std: float = field(default=1.6, metadata={"help": "training sigmas: log sigma ~ N(mean, std)"})
    encode_batch_size: int = field(default=16, metadata={"help": "clips per VAE batch when encoding"})
    ema_decay: float | None = field(
        default=None, metadata={"help": "keep an exponential moving average of the DiT's weights (e.g. 0.995); the "
                                        "output holds the average, checkpoints hold both"}
    )  # fmt: skip

    def __post_init__(self) -> None:
        for key in ("cosmos_model_name", "train_data"):
            if not getattr(self, key):
                raise TheWorldUserError(f"{key} is required (set it in the config file or with --{key})")
        if self.observed_frames < 1 or (self.observed_frames - 1) % 4:
            raise TheWorldUserError(f"observed_frames must be 4k+1 (1, 5, 9, ...), got {self.observed_frames}")
        for key in ("rollout_frames", "world_image_size", "max_sequence_length", "encode_batch_size", "fps"):
            if getattr(self, key) < 1:
                raise TheWorldUserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise TheWorldUserError(f"ema_decay must be between 0 and 1 (or unset), got {self.ema_decay}")
        if self.sigma_log_std <= 0:
            raise TheWorldUserError(f"sigma_log_std must be positive, got {self.sigma_log_std}")
        if self.transformer_config is not None and not os.path.isfile(self.transformer_config):
            raise TheWorldUserError(f"transformer_config: file {self.transformer_config} does not exist")
        # Fixed by TheWorld: batches are dicts of latents the model's forward takes as they are, and
        # every DiT parameter is in every step's graph (no DDP search for unused ones).
        self.remove_unused_columns = False
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
            self.use_cpu = True  # processes launched on CPUs join a gloo group (see training/run.py)
        super().__post_init__()

    @property
    def condition_latent_frames(self) -> int:
        return latent_frames(self.observed_frames)

    @property
    def clip_frames(self) -> int:
        """Frames a training clip needs: the observed ones and the 4K that follow."""
        return self.observed_frames + 4 * self.rollout_frames


# ------------------------------------------------------------------------------------------------
# the objective


class DiTDenoiser(nn.Module):
    """The DiT with its fixed text condition; `forward` returns the denoising loss the sampler assumes.

    All randomness (sigma, noise, the posterior sample's noise) comes in as arguments, so the loss
    is a pure function of its inputs (the trainer draws them from a keyed generator).
    """

    def __init__(self, transformer: nn.Module, prompt_embeds: torch.Tensor, condition_frames: int, fps: int) -> None:
        super().__init__()
        self.transformer = transformer
        self.condition_frames = condition_frames
        self.fps = fps
        self.register_buffer("prompt_embeds", prompt_embeds.detach().clone(), persistent=False)  # (1, L, D)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers: int = 1,
                                        offload: bool = False) -> None:  # fmt: skip
        """What the Trainer calls for `activation_checkpointing: true`: diffusers' checkpointing of every DiT block."""
        if every_n_layers != 1 or offload or activation_checkpointing_kwargs:
            raise TheWorldUserError(
                "activation_checkpointing_kwargs are not supported for the world model: the DiT checkpoints every block"
            )
        self.transformer.enable_gradient_checkpointing()

    def forward(
        self,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        posterior_noise: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        # latent_mean, latent_std: (B, 16, T, h, w); sigma: (B,); noise: (B, 16, T - Tc, h, w);
        # posterior_noise: (B, 16, Tc, h, w) with Tc = condition_frames
        batch, _, frames, height, width = latent_mean.shape
        tc = self.condition_frames
        dtype = next(self.transformer.parameters()).dtype
        conditioning = latent_mean[:, :, :tc] + latent_std[:, :, :tc] * posterior_noise  # a posterior sample
        target_frames = latent_mean[:, :, tc:]  # x0 of the frames to predict: the posterior mean
        t = (sigma / (1 + sigma)).view(batch, 1, 1, 1, 1)
        noisy = (1 - t) * target_frames + t * noise  # = c_in * (x0 + sigma * eps)
        model_input = torch.cat([conditioning, noisy], dim=2)  # (B, 16, T, h, w)
        t_conditioning = SIGMA_CONDITIONING / (1 + SIGMA_CONDITIONING)
        timestep = torch.cat(
            [latent_mean.new_full((batch, 1, tc, 1, 1), t_conditioning), t.expand(batch, 1, frames - tc, 1, 1)], dim=2
        )  # (B, 1, T, 1, 1)
        mask = torch.zeros(batch, 1, frames, height, width, device=latent_mean.device, dtype=dtype)
        mask[:, :, :tc] = 1.0  # the condition-mask channel
        padding_mask = latent_mean.new_zeros(1, 1, height * 8, width * 8, dtype=dtype)
        output = self.transformer(
            hidden_states=model_input.to(dtype),
            timestep=timestep.to(dtype),
            encoder_hidden_states=self.prompt_embeds.to(dtype).expand(batch, -1, -1),
            fps=self.fps,
            condition_mask=mask,
            padding_mask=padding_mask,
            return_dict=False,
        )[0]
        prediction = output[:, :, tc:].float()
        target = noise - target_frames  # v = eps - x0
        return {"loss": (prediction - target).pow(2).mean()}


class WorldLatentDataset(torch.utils.data.Dataset):
    """Each item: one clip's normalised posterior mean and std over the frames the run uses."""

    def __init__(self, latents: WorldLatents, frames: int) -> None:
        if latents.latent_frames < frames:
            raise TheWorldUserError(
                f"the training clips have {latents.latent_frames} latent frames; observed_frames + 4 x "
                f"rollout_frames needs {frames}"
            )
        self.mean = latents.mean[:, :, :frames]
        self.std = latents.std[:, :, :frames]

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"latent_mean": self.mean[index], "latent_std": self.std[index]}


# ------------------------------------------------------------------------------------------------
# the trainer


class WeightAverage(TrainerCallback):
    """An exponential moving average of the DiT's weights, updated after every optimizer step.

    Diffusion models sample better from averaged weights; the average is part of a checkpoint
    (`ema.safetensors`), so a resumed run continues it exactly."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = module
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def on_step_end(self, args, state, control, **kwargs):
        for key, value in self.module.state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value.detach().float(), 1.0 - self.decay)
            else:
                self.shadow[key].copy_(value)

    def averaged_state(self, like: nn.Module) -> dict[str, torch.Tensor]:
        reference = like.state_dict()
        return {k: v.to(reference[k].dtype) for k, v in self.shadow.items()}


class WorldModelTrainer(Trainer):
    """`Trainer` for the DiT: keyed noise, diffusers-layout weights in checkpoints, the same progress bar
    and the same whole-or-nothing, checksummed checkpoints as `theworld train` (`AtomicCheckpoints`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._noise_step = -1
        self._micro_batch = 0
        self.progress = TheWorldProgressCallback(description="world model")
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.add_callback(self.progress)
        self.add_callback(AtomicCheckpoints())
        self.average = WeightAverage(self.model_for_noise.transformer, self.args.ema_decay) if self.args.ema_decay else None
        if self.average is not None:
            self.add_callback(self.average)

    def draw_noise(self, latent_mean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sigma, noise and posterior noise for this micro-batch, from a generator keyed by
        (seed, optimizer step, micro-batch, process): a resumed run draws exactly what a straight one does."""
        if self._noise_step != self.state.global_step:
            self._noise_step, self._micro_batch = self.state.global_step, 0
        key = [self.args.seed, self.state.global_step, self._micro_batch, self.args.process_index]
        self._micro_batch += 1
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        batch, channels, _, height, width = latent_mean.shape
        tc = self.model_for_noise.condition_frames
        predicted = latent_mean.shape[2] - tc
        log_sigma = torch.randn(batch, generator=generator) * self.args.sigma_log_std + self.args.sigma_log_mean
        draws = {
            "sigma": log_sigma.exp(),
            "noise": torch.randn(batch, channels, predicted, height, width, generator=generator),
            "posterior_noise": torch.randn(batch, channels, tc, height, width, generator=generator),
        }
        return {k: v.to(latent_mean.device) for k, v in draws.items()}

    @property
    def model_for_noise(self) -> DiTDenoiser:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, **self.draw_noise(inputs["latent_mean"]))
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The DiT in diffusers' layout (`transformer/`): what a checkpoint and the output hold (the
        Trainer calls this for every checkpoint, as `TheWorldTrainer.save_model`)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        transformer = self.model_for_noise.transformer
        final = os.path.abspath(output_dir) == os.path.abspath(self.args.output_dir)
        if self.average is not None and final:  # the output is the averaged DiT: swap it in to save it
            trained = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
            transformer.load_state_dict(self.average.averaged_state(transformer))
            try:
                transformer.save_pretrained(os.path.join(output_dir, "transformer"))
            finally:
                transformer.load_state_dict(trained)
        else:
            transformer.save_pretrained(os.path.join(output_dir, "transformer"))
        if self.average is not None and not final:
            save_file(self.average.shadow, os.path.join(output_dir, EMA_NAME), metadata={"decay": str(self.average.decay)})
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from diffusers import CosmosTransformer3DModel

        folder = os.path.join(resume_from_checkpoint, "transformer")
        if not os.path.isdir(folder):
            raise TheWorldUserError(f"{resume_from_checkpoint} is not a world-model checkpoint (no transformer/)")
        verify_checkpoint(resume_from_checkpoint)  # every file whole, as checksums.json vouches
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        saved = CosmosTransformer3DModel.from_pretrained(folder, torch_dtype=next(target.parameters()).dtype)
        target.transformer.load_state_dict(saved.state_dict(), strict=True)
        if self.average is not None:
            ema = os.path.join(resume_from_checkpoint, EMA_NAME)
            if not os.path.isfile(ema):
                raise TheWorldUserError(f"{resume_from_checkpoint} has no {EMA_NAME}: it was trained without ema_decay")
            self.average.shadow = {k: v.float() for k, v in load_file(ema).items()}
        logger.info("resumed the DiT, optimizer, scheduler, RNG and data position from %s", resume_from_checkpoint)


# ------------------------------------------------------------------------------------------------
# the run


@dataclass
class WorldModelTrainResult:
    output_dir: str
    global_step: int
    metrics: dict[str, float]
    trainer: Any = None


def read_arguments(config_file: str | os.PathLike | None, cli: list[str] | None = None) -> WorldModelTrainingArguments:
    """A YAML/JSON file of keys, then `--key value` overrides, parsed by `HfArgumentParser` (the dataclass is the schema)."""
    from transformers import HfArgumentParser

    from theworld.training.config import read_config_file

    names = [f.name for f in fields(WorldModelTrainingArguments)]
    values = read_config_file(config_file) if config_file is not None else {}
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TheWorldUserError(f"unknown config key {key!r} in {config_file}{hint}")
    argv: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            argv.extend(str(v) for v in value)
        else:
            argv.append(str(value).lower() if isinstance(value, bool) else str(value))
    parser = HfArgumentParser(WorldModelTrainingArguments, exit_on_error=False)
    try:
        (args, rest) = parser.parse_args_into_dataclasses(args=argv + list(cli or []), return_remaining_strings=True)
    except argparse.ArgumentError as err:
        raise TheWorldUserError(str(err)) from None
    if rest:
        flags = [r for r in rest if r.startswith("--")]
        close = difflib.get_close_matches(flags[0][2:] if flags else rest[0], names, n=1)
        hint = f"; did you mean --{close[0]}?" if close else ""
        raise TheWorldUserError(f"unknown arguments {rest}{hint}")
    return args


def load_training_latents(args: WorldModelTrainingArguments, folder: Path) -> WorldLatents:
    """The clips' latents: a latents file as given, or the clips of a data file encoded once
    (kept in output_dir/world_latents.safetensors and reused by a resumed run)."""
    if args.train_data.endswith(".safetensors"):
        return WorldLatents.load(args.train_data)
    from theworld.data.loading import load_samples
    from theworld.processing.processor import Clip, world_pixels
    from theworld.world_encoder.vae import CosmosWorldEncoder

    samples = load_samples(args.train_data, format=args.train_data_format, image_folder=args.image_folder)
    clips: list[tuple[str, list[Any]]] = []
    for sample in samples:
        videos = [v for v in sample.visuals() if isinstance(v, list)]
        if not videos:
            raise TheWorldUserError(f"sample {sample.id}: no video; world-model training needs clips")
        if len(videos[0]) < args.clip_frames:
            raise TheWorldUserError(
                f"sample {sample.id}: its clip has {len(videos[0])} frames; observed_frames + 4 x rollout_frames "
                f"= {args.clip_frames} are needed"
            )
        clips.append((sample.id, videos[0][: args.clip_frames]))
    cached = Path(args.output_dir) / LATENTS_NAME
    if cached.is_file():
        latents = WorldLatents.load(cached)
        if latents.ids == [clip_id for clip_id, _ in clips]:
            logger.info("reusing the encoded clips in %s", cached)
            return latents
    encoder = CosmosWorldEncoder.from_pretrained(folder)
    pixels = (
        (clip_id, torch.from_numpy(world_pixels(Clip(frames), args.world_image_size, args.clip_frames)))
        for clip_id, frames in clips
    )
    latents = encode_clips(encoder, pixels, batch_size=args.encode_batch_size, total=len(clips))
    if args.should_save:
        latents.save(cached)
    return latents


def build_transformer(args: WorldModelTrainingArguments, folder: Path) -> nn.Module:
    from diffusers import CosmosTransformer3DModel

    if args.transformer_config is None:
        if not (folder / "transformer").is_dir():
            raise TheWorldUserError(
                f"cosmos_model_name {args.cosmos_model_name}: no transformer/ folder to fine-tune (set "
                "transformer_config to train a new DiT from scratch)"
            )
        return CosmosTransformer3DModel.from_pretrained(folder / "transformer")
    with open(args.transformer_config, encoding="utf-8") as handle:
        config = json.load(handle)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        return CosmosTransformer3DModel(**config)
    except TypeError as err:
        raise TheWorldUserError(f"transformer_config {args.transformer_config}: {err}") from None


def build_trainer(
    args: WorldModelTrainingArguments, latents: WorldLatents | None = None
) -> tuple[WorldModelTrainer, WorldTextCondition, Path]:
    """Everything up to `trainer.train()`: base repo, latents, DiT, text condition, trainer."""
    from transformers import set_seed

    folder = resolve_world_model_folder(args.cosmos_model_name, need_transformer=args.transformer_config is None)
    latents = latents if latents is not None else load_training_latents(args, folder)
    frames = args.condition_latent_frames + args.rollout_frames
    dataset = WorldLatentDataset(latents, frames)
    set_seed(args.seed)  # a DiT trained from scratch starts from the same weights every run
    transformer = build_transformer(args, folder)
    _, _, _, h, w = dataset.mean.shape  # the DiT must take these clips, as the sampler will check
    check_rollout_input(transformer.config, args.observed_frames, h * 8, w * 8, args.rollout_frames)
    negative = RolloutSettings(prompt=args.prompt).resolved_negative_prompt  # stored with the output
    text = encode_text_condition(folder, args.prompt, negative, args.max_sequence_length)
    model = DiTDenoiser(transformer, text.prompt_embeds, args.condition_latent_frames, args.fps)
    trainer = WorldModelTrainer(model=model, args=args, train_dataset=dataset)
    return trainer, text, folder


def save_world_model(trainer: WorldModelTrainer, text: WorldTextCondition, base: Path) -> str:
    """The output folder as a Cosmos repo: trained transformer/, the base's other parts, model_index.json."""
    args = trainer.args
    out = Path(args.output_dir)
    trainer.save_model(str(out))  # -> transformer/
    if not args.should_save:
        return str(out)
    for part in COPIED_PARTS:
        if (base / part).is_dir() and not (out / part).exists():
            shutil.copytree(base / part, out / part, copy_function=_link_or_copy)
    if (base / "model_index.json").is_file():
        shutil.copyfile(base / "model_index.json", out / "model_index.json")
    else:
        from theworld.testing.tiny_world_model import write_model_index

        write_model_index(out)
    text.save(out)
    info = {
        "base": str(args.cosmos_model_name),
        "from_scratch": args.transformer_config is not None,
        "global_step": trainer.state.global_step,
        "observed_frames": args.observed_frames,
        "rollout_frames": args.rollout_frames,
        "prompt": args.prompt,
        "max_sequence_length": args.max_sequence_length,
        "sigma_log_mean": args.sigma_log_mean,
        "sigma_log_std": args.sigma_log_std,
    }
    (out / TRAINING_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return str(out)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a file (free, and the base's files are never written to), copy across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def train_world_model(
    args: WorldModelTrainingArguments, latents: WorldLatents | None = None
) -> WorldModelTrainResult:
    """Train as configured; the output folder is a Cosmos repo holding the trained DiT."""
    resume = args.resume_from_checkpoint
    if resume == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        resume = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        if resume is None:
            raise TheWorldUserError(f"resume_from_checkpoint=latest: no checkpoint-N folder in {args.output_dir}")
    trainer, text, base = build_trainer(args, latents)
    result = trainer.train(resume_from_checkpoint=resume)
    output = save_world_model(trainer, text, base)
    logger.info("world model trained for %d steps; Cosmos repo in %s", trainer.state.global_step, output)
    return WorldModelTrainResult(output, trainer.state.global_step, dict(result.metrics), trainer)

