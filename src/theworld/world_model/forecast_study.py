"""The demo's world model for its forecast task, end to end, measured step by step.

A world model for the synthetic world, built the way Cosmos was built for real video but at CPU
scale, and judged on what it is for: predicting what happens after a clip ends.

1. data: many unlabelled forecast clips (observed + future frames) and evaluation clips from a
   separate seed stream (`theworld.data.forecast`);
2. VAE: a tiny Cosmos-layout repo (`theworld.testing`), whose `AutoencoderKLWan` is trained to
   reconstruct the world's frames (`vae_training`, `vae_steps` > 0) or, by default, left random
   with the two fixes that matter (posterior log-variance set low, latent statistics measured on
   the world's own frames): at the budgets measured, that gave the world model better latents;
3. latents: every clip encoded once (posterior mean and std, normalised);
4. DiT: a small `CosmosTransformer3DModel` trained from scratch on the unlabelled latents by
   `train_world_model` (the `theworld train-world-model` machinery and objective);
5. rollouts: `WorldModel.imagine` on the evaluation clips' observed frames (the pipeline's
   semantics: padded clip, posterior sample, K imagined latent frames);
6. errors: the imagined future latents against the true ones, beside copy-last, mean-future and
   ridge baselines fitted on the unlabelled clips (`baselines`), on all clips and on the clips
   where a ball bounces in the future.

Every step records its wall and CPU time. `eval_split="validation"` evaluates on clips of a third
seed stream, for choosing settings; the held-out split is for reporting only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

VALIDATION_SEED_OFFSET = 2_000_003
DEFAULT_PROMPT = "Balls move at constant speed and bounce off the walls."


@dataclass
class ForecastStudyConfig:
    output_dir: str = "runs/world_model_study"
    seed: int = 0
    eval_split: str = "heldout"
    """"heldout" (report) or "validation" (choose settings: a seed stream of its own)."""
    # data
    n_unlabelled: int = 600
    n_eval: int = 240
    image_size: int = 64
    observed_frames: int = 9
    future_frames: int = 8
    # VAE
    vae_steps: int = 0
    """0: the VAE is not trained, only its posterior log-variance set low and its latent statistics
    measured on the world's frames (measured: better latents for the world model than 80-300
    CPU-affordable training steps; see docs/rollout.md)."""
    vae_batch_size: int = 8
    vae_learning_rate: float = 2e-3
    vae_crop: int | None = 32
    vae_clips: int = 600
    """Unlabelled clips the VAE trains on (it sees windows, not whole clips)."""
    # DiT
    dit_steps: int = 400
    dit_batch_size: int = 32
    dit_learning_rate: float = 2e-3
    dit_heads: int = 4
    dit_head_dim: int = 32
    dit_layers: int = 2
    dit_mlp_ratio: float = 4.0
    sigma_log_mean: float = 1.0
    sigma_log_std: float = 1.0
    dit_ema_decay: float | None = None
    # rollouts
    rollout_steps: int = 10
    prompt: str = DEFAULT_PROMPT
    max_sequence_length: int = 16
    threads: int | None = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.eval_split not in ("heldout", "validation"):
            raise TheWorldUserError(f"eval_split must be 'heldout' or 'validation', got {self.eval_split!r}")

    @property
    def rollout_frames(self) -> int:
        return self.future_frames // 4


class Stopwatch:
    """Wall and CPU (this process) seconds per named step."""

    def __init__(self) -> None:
        self.timings: dict[str, dict[str, float]] = {}

    def __call__(self, name: str):
        watch = self

        class _Lap:
            def __enter__(self):
                self.wall, self.cpu = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                watch.timings[name] = {
                    "wall_s": round(time.perf_counter() - self.wall, 2),
                    "cpu_s": round(time.process_time() - self.cpu, 2),
                }
                logger.info("%s: %.1f s wall, %.1f s CPU", name, watch.timings[name]["wall_s"], watch.timings[name]["cpu_s"])

        return _Lap()


def clips_uint8(clips: list[Any]) -> torch.Tensor:
    """Forecast clips -> (N, T_observed + T_future, H, W, 3) uint8."""
    return torch.from_numpy(np.stack([np.stack([np.asarray(f) for f in c.frames + c.future]) for c in clips]))


def make_data(config: ForecastStudyConfig) -> tuple[list[Any], list[Any]]:
    from theworld.data.forecast import ForecastConfig, generate_forecast
    from theworld.data.synthetic import heldout_seed

    world = ForecastConfig(image_size=config.image_size, observed_frames=config.observed_frames,
                           future_frames=config.future_frames)  # fmt: skip
    train = generate_forecast(config.n_unlabelled, seed=config.seed, config=world, split="unlabelled")
    eval_seed = heldout_seed(config.seed) if config.eval_split == "heldout" else config.seed + VALIDATION_SEED_OFFSET
    evaluation = generate_forecast(config.n_eval, seed=eval_seed, config=world, split=config.eval_split)
    return train, evaluation


def build_vae_repo(config: ForecastStudyConfig, train_clips: torch.Tensor, out: Path) -> dict[str, Any]:
    """The tiny Cosmos-layout repo with its VAE trained on the world's frames (in out/models/world_base)."""
    from diffusers import AutoencoderKLWan

    from theworld.testing.tiny_world_model import make_tiny_world_model
    from theworld.world_model.vae_training import VAETrainSettings, record_latent_statistics, train_vae

    repo = make_tiny_world_model(out / "models" / "world_base")
    vae = AutoencoderKLWan.from_pretrained(repo / "vae")
    settings = VAETrainSettings(steps=config.vae_steps, batch_size=config.vae_batch_size,
                                learning_rate=config.vae_learning_rate, crop=config.vae_crop, seed=config.seed)  # fmt: skip
    subset = train_clips[: config.vae_clips]
    history = train_vae(vae, subset, settings) if config.vae_steps > 0 else []
    if config.vae_steps == 0:  # untrained: still start the posterior's log-variance low, as training would
        with torch.no_grad():
            vae.quant_conv.bias[vae.config.z_dim :] = settings.initial_logvar
    record_latent_statistics(vae, subset[:128])
    vae.save_pretrained(repo / "vae")
    tail = history[-10:] or [float("nan")]
    return {"repo": str(repo), "loss_first10": float(np.mean(history[:10])) if history else None,
            "loss_last10": float(np.mean(tail))}  # fmt: skip


def encode(repo: Path, clips: torch.Tensor, ids: list[str]):
    from theworld.world_encoder.vae import CosmosWorldEncoder
    from theworld.world_model.latents import encode_clips
    from theworld.world_model.vae_training import to_pixels

    encoder = CosmosWorldEncoder.from_pretrained(repo)
    pairs = ((clip_id, to_pixels(clip[None])[0]) for clip_id, clip in zip(ids, clips))
    return encode_clips(encoder, pairs, batch_size=16, total=len(ids), progress=False)


def train_dit(config: ForecastStudyConfig, repo: Path, latents, out: Path) -> dict[str, Any]:
    from theworld.testing.tiny_world_model import TinyDiTSpec
    from theworld.world_model.training import WorldModelTrainingArguments, train_world_model

    spec = TinyDiTSpec(num_attention_heads=config.dit_heads, attention_head_dim=config.dit_head_dim,
                       num_layers=config.dit_layers, mlp_ratio=config.dit_mlp_ratio, extra_pos_embed_type="learnable",
                       adaln_lora_dim=32)  # fmt: skip
    text_dim = json.loads((repo / "text_encoder" / "config.json").read_text())["d_model"]
    dit_config = out / "models" / "dit_config.json"
    dit_config.write_text(json.dumps(spec.transformer_config(text_embed_dim=text_dim), indent=2))
    args = WorldModelTrainingArguments(
        output_dir=str(out / "models" / "world_model"), cosmos_model_name=str(repo), transformer_config=str(dit_config),
        train_data="(in memory)", observed_frames=config.observed_frames, rollout_frames=config.rollout_frames,
        prompt=config.prompt, max_sequence_length=config.max_sequence_length, per_device_train_batch_size=config.dit_batch_size,
        learning_rate=config.dit_learning_rate, max_steps=config.dit_steps, lr_scheduler_type="cosine",
        warmup_steps=min(20, config.dit_steps // 10), save_steps=10**9, logging_steps=max(1, config.dit_steps // 20),
        sigma_log_mean=config.sigma_log_mean, sigma_log_std=config.sigma_log_std, seed=config.seed, report_to="none",
        disable_tqdm=True, save_strategy="no", ema_decay=config.dit_ema_decay,
    )  # fmt: skip
    result = train_world_model(args, latents=latents)
    curve = [(e["step"], e["loss"]) for e in result.trainer.state.log_history if "loss" in e]
    parameters = sum(p.numel() for p in result.trainer.model.transformer.parameters())
    return {"repo": result.output_dir, "parameters": parameters, "loss_curve": curve}


def rollouts(config: ForecastStudyConfig, repo: str, clips: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    from theworld.testing.tiny_world_model import TinyTestSafetyChecker
    from theworld.world_model import RolloutSettings, WorldModel
    from theworld.world_model.vae_training import to_pixels

    settings = RolloutSettings(frames=config.rollout_frames, steps=config.rollout_steps, guidance=1.0, seed=config.seed,
                               prompt=config.prompt, max_sequence_length=config.max_sequence_length)  # fmt: skip
    # The demo's DiT is a tiny model trained here from scratch: the test-double guardrail applies.
    world = WorldModel.from_pretrained(repo, settings, safety_checker=TinyTestSafetyChecker())
    observed = clips[:, : config.observed_frames]
    return torch.cat([world.imagine(to_pixels(chunk)) for chunk in observed.split(batch_size)])


def evaluate(config: ForecastStudyConfig, train_latents, eval_latents, imagined: torch.Tensor, events: list[dict]) -> dict:
    from theworld.world_model.baselines import MeanFuture, Ridge, compare, copy_last

    tc = 1 + (config.observed_frames - 1) // 4
    k = config.rollout_frames
    train_obs, train_future = train_latents.mean[:, :, :tc], train_latents.mean[:, :, tc : tc + k]
    eval_obs, eval_future = eval_latents.mean[:, :, :tc], eval_latents.mean[:, :, tc : tc + k]
    ridge = Ridge.fit_validated(train_obs, train_future, seed=config.seed)
    predictions = {
        "world_model": imagined,
        "copy_last": copy_last(eval_obs, k),
        "mean_future": MeanFuture.fit(train_future)(eval_obs),
        "ridge": ridge(eval_obs),
    }
    bounce = torch.tensor([e["bounce"] for e in events])
    results = {"all": compare(eval_future, predictions, "world_model", seed=config.seed), "ridge_penalty": ridge.penalty}
    if bounce.any():
        results["bounce"] = compare(eval_future[bounce], {n: p[bounce] for n, p in predictions.items()}, "world_model",
                                    seed=config.seed)  # fmt: skip
    results["beats_all_baselines"] = all(
        results[part]["vs"][name]["better"] for part in ("all", "bounce") if part in results for name in results[part]["vs"]
    )
    return results


def run_forecast_study(config: ForecastStudyConfig) -> dict[str, Any]:
    """Run every step; returns (and writes to output_dir/results.json) errors, timings, environment."""
    from theworld.demo.workers import fresh_output_dir

    out = fresh_output_dir(config.output_dir, "output_dir", config.threads)
    watch = Stopwatch()
    load_before = os.getloadavg()
    with watch("data"):
        train, evaluation = make_data(config)
        train_px, eval_px = clips_uint8(train), clips_uint8(evaluation)
    with watch("vae_training"):
        vae = build_vae_repo(config, train_px, out)
    repo = Path(vae["repo"])
    with watch("encode_clips"):
        train_latents = encode(repo, train_px, [c.id for c in train])
        eval_latents = encode(repo, eval_px, [c.id for c in evaluation])
        train_latents.save(out / "latents" / "unlabelled.safetensors")
        eval_latents.save(out / "latents" / f"{config.eval_split}.safetensors")
    with watch("dit_training"):
        dit = train_dit(config, repo, train_latents, out)
    with watch("rollouts"):
        imagined = rollouts(config, dit["repo"], eval_px)
    with watch("baselines_and_errors"):
        errors = evaluate(config, train_latents, eval_latents, imagined, [c.events for c in evaluation])
    results = {
        "errors": errors,
        "vae": vae,
        "dit": dit,
        "timings": watch.timings,
        "total": {k: round(sum(t[k] for t in watch.timings.values()), 1) for k in ("wall_s", "cpu_s")},
        "config": asdict(config),
        "environment": {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "torch": torch.__version__},
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results
