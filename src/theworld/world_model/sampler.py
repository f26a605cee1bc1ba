"""The rollout sampler: `Cosmos2VideoToWorldPipeline(..., output_type="latent")`, batched per clip.

What one clip's rollout is, by definition: the pipeline called on that clip alone with
`num_frames` = clip frames + 4K, the world model's prompt, `num_inference_steps`, `guidance_scale`
and `generator=torch.Generator().manual_seed(seed)`; its last K latent frames, divided by the
pipeline's `sigma_data` so they are normalised like `CosmosWorldEncoder`'s latents.

The pipeline's own code does the parts that decide those numbers:

- `prepare_latents` pads the clip with its last frame, VAE-encodes it and draws a *sample* of the
  posterior with the clip's generator, then draws the initial noise from the same generator
  (each clip gets its own generator, so a clip's draws never depend on the batch);
- `retrieve_timesteps` and the scheduler (with the EDM sigmas the pipeline registers) give the
  sigma schedule; `scheduler.step` takes each Euler step.

The denoising loop between them is the pipeline's `__call__` loop (EDM preconditioning
c_in = c_skip = 1 - t, c_out = -t with t = sigma / (1 + sigma); conditioning frames kept clean at
sigma_conditioning; a second DiT pass on the negative prompt with guidance > 1), written for a
batch and for stored text embeddings instead of a T5 encoder. The equivalence test
(tests/world_model/test_pipeline_equivalence.py) holds it to the pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import Cosmos2VideoToWorldPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.cosmos.pipeline_cosmos2_video2world import retrieve_timesteps

from theworld.errors import TheWorldUserError
from theworld.world_model.settings import RolloutSettings
from theworld.world_model.text import WorldTextCondition

# What `Cosmos2VideoToWorldPipeline.__init__` registers on its scheduler and `__call__` defaults to.
PIPELINE_SIGMAS = dict(sigma_max=80.0, sigma_min=0.002, sigma_data=1.0, final_sigmas_type="sigma_min")
SIGMA_CONDITIONING = 0.0001


def pipeline_scheduler(config: dict[str, Any]) -> FlowMatchEulerDiscreteScheduler:
    """A fresh scheduler (it is stateful) configured as the pipeline configures it."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.register_to_config(**PIPELINE_SIGMAS)
    return scheduler


class _PipelineLatents:
    """The attributes `Cosmos2VideoToWorldPipeline.prepare_latents` reads, so that its own code
    prepares the latents (no pipeline instance: that would need T5 and the checker in memory)."""

    prepare_latents = Cosmos2VideoToWorldPipeline.prepare_latents

    def __init__(self, vae: Any, scheduler: FlowMatchEulerDiscreteScheduler) -> None:
        self.vae = vae
        self.scheduler = scheduler
        # As the pipeline's __init__ derives them from the VAE.
        self.vae_scale_factor_temporal = 2 ** sum(vae.temperal_downsample)
        self.vae_scale_factor_spatial = 2 ** len(vae.temperal_downsample)


def latent_frames(pixel_frames: int, temporal_compression: int = 4) -> int:
    """Latent frames of a clip of `pixel_frames` frames (the VAE's causal 1 + (T-1)//4)."""
    return 1 + (pixel_frames - 1) // temporal_compression


def check_rollout_input(transformer_config: Any, frames: int, height: int, width: int, rollout_frames: int,
                        spatial_compression: int = 8) -> None:
    """Clear errors for inputs the DiT cannot take: a size it cannot patch, more frames than its budget."""
    patch_t, patch_h, patch_w = transformer_config.patch_size
    max_t, max_h, max_w = transformer_config.max_size
    side = spatial_compression * patch_h
    if height % side or width % (spatial_compression * patch_w):
        raise TheWorldUserError(
            f"world image size {height}x{width} cannot be patched by the world model's DiT: each side must be a "
            f"multiple of {side} ({spatial_compression}x VAE downsampling x {patch_h}x{patch_w} patches)"
        )
    if height // spatial_compression > max_h or width // spatial_compression > max_w:
        raise TheWorldUserError(
            f"world image size {height}x{width} is {height // spatial_compression}x{width // spatial_compression} "
            f"latents, more than the DiT's max_size {max_h}x{max_w} (at most "
            f"{max_h * spatial_compression}x{max_w * spatial_compression} pixels)"
        )
    observed = latent_frames(frames)
    budget = max_t // patch_t
    if observed + rollout_frames > budget:
        raise TheWorldUserError(
            f"world_rollout_frames={rollout_frames} is too many: the clip's {frames} frames are {observed} latent "
            f"frames and the DiT's frame budget (max_size[0]={max_t}) is {budget} latent frames in all, so at most "
            f"{max(budget - observed, 0)} can be imagined"
        )


@torch.no_grad()
def sample_rollouts(
    transformer: Any,
    vae: Any,
    scheduler_config: dict[str, Any],
    text: WorldTextCondition,
    settings: RolloutSettings,
    pixel_values: torch.Tensor,
) -> torch.Tensor:
    """Clips (B, 3, T, H, W) in [-1, 1] -> imagined latents (B, 16, K, H/8, W/8), encoder-normalised."""
    if pixel_values.ndim != 5 or pixel_values.shape[1] != 3:
        raise TheWorldUserError(f"world pixels must be (batch, 3, frames, height, width), got {tuple(pixel_values.shape)}")
    batch, _, frames, height, width = pixel_values.shape
    if (frames - 1) % 4:
        raise TheWorldUserError(f"a world clip has {frames} frames; the VAE needs 4k+1 frames (1, 5, 9, ...)")
    check_rollout_input(transformer.config, frames, height, width, settings.frames)
    if not text.describes(settings.prompt, settings.resolved_negative_prompt, settings.max_sequence_length):
        raise TheWorldUserError(
            "these rollout settings name another text condition (prompt, negative prompt or max_sequence_length) "
            "than the world model was set up with; set up a world model for them"
        )
    param = next(transformer.parameters())
    device, transformer_dtype = param.device, param.dtype
    vae_dtype = next(vae.parameters()).dtype
    guidance = settings.uses_guidance

    scheduler = pipeline_scheduler(scheduler_config)
    sigmas_dtype = torch.float32 if torch.backends.mps.is_available() else torch.float64  # as the pipeline
    sigmas = torch.linspace(0, 1, settings.steps, dtype=sigmas_dtype)
    timesteps, _ = retrieve_timesteps(scheduler, device=device, sigmas=sigmas)
    if scheduler.config.final_sigmas_type == "sigma_min":
        scheduler.sigmas[-1] = scheduler.sigmas[-2]

    view = _PipelineLatents(vae, scheduler)
    num_frames = frames + view.vae_scale_factor_temporal * settings.frames
    # One generator per clip: each clip's posterior sample and noise are its own (batch-independent).
    generators = [torch.Generator().manual_seed(settings.seed) for _ in range(batch)]
    video = pixel_values.to(device=device, dtype=vae_dtype)
    latents, conditioning, cond_indicator, uncond_indicator, cond_mask, uncond_mask = view.prepare_latents(
        video, batch, transformer.config.in_channels - 1, height, width, num_frames, guidance,
        torch.float32, device, generators, None,
    )  # fmt: skip
    # latents: (B, 16, T_obs + K, H/8, W/8) noise x sigma_max; conditioning: the clip's posterior sample
    cond_mask = cond_mask.to(transformer_dtype)
    if guidance:
        uncond_mask = uncond_mask.to(transformer_dtype)
    padding_mask = latents.new_zeros(1, 1, height, width, dtype=transformer_dtype)
    prompt_embeds = text.prompt_embeds.to(device=device, dtype=transformer_dtype).expand(batch, -1, -1)
    negative_embeds = text.negative_prompt_embeds.to(device=device, dtype=transformer_dtype).expand(batch, -1, -1)
    sigma_conditioning = torch.tensor(SIGMA_CONDITIONING, dtype=torch.float32, device=device)
    t_conditioning = sigma_conditioning / (sigma_conditioning + 1)

    def denoised(indicator: torch.Tensor, mask: torch.Tensor, embeds: torch.Tensor, c_in, c_skip, c_out, timestep):
        """The DiT's estimate of the clean latents, conditioning frames held at the clip's."""
        model_input = indicator * conditioning + (1 - indicator) * (latents * c_in)
        model_timestep = indicator * t_conditioning + (1 - indicator) * timestep  # (B, 1, T, 1, 1)
        output = transformer(
            hidden_states=model_input.to(transformer_dtype),
            timestep=model_timestep.to(transformer_dtype),
            encoder_hidden_states=embeds,
            fps=settings.fps,
            condition_mask=mask,
            padding_mask=padding_mask,
            return_dict=False,
        )[0]
        estimate = (c_skip * latents + c_out * output.float()).to(transformer_dtype)
        return indicator * conditioning + (1 - indicator) * estimate

    for i, t in enumerate(timesteps):
        sigma = scheduler.sigmas[i]
        current_t = sigma / (sigma + 1)
        c_in = c_skip = 1 - current_t
        c_out = -current_t
        timestep = current_t.view(1, 1, 1, 1, 1).expand(latents.size(0), -1, latents.size(2), -1, -1)
        estimate = denoised(cond_indicator, cond_mask, prompt_embeds, c_in, c_skip, c_out, timestep)
        if guidance:
            unconditional = denoised(uncond_indicator, uncond_mask, negative_embeds, c_in, c_skip, c_out, timestep)
            estimate = estimate + settings.guidance * (estimate - unconditional)
        velocity = (latents - estimate) / sigma
        latents = scheduler.step(velocity, t, latents, return_dict=False)[0]

    imagined = latents[:, :, -settings.frames :]  # (B, 16, K, H/8, W/8)
    return imagined.float() / scheduler.config.sigma_data
