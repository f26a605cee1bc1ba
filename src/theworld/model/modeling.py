"""`TheWorld`: Gemma 3 plus a world path in Gemma's own image idiom (placeholders, features, `masked_scatter`).

Without world inputs `forward` is `Gemma3ForConditionalGeneration.forward`, untouched: logits are bit-identical.
"""

import functools
import logging
import os
from pathlib import Path
from typing import Any, Unpack

import torch
from torch import nn
from transformers import Gemma3ForConditionalGeneration, Gemma3Model
from transformers.cache_utils import Cache
from transformers.models.gemma3.modeling_gemma3 import Gemma3CausalLMOutputWithPast, Gemma3PreTrainedModel
from transformers.utils import TransformersKwargs

from theworld.errors import TheWorldUserError
from theworld.model import checkpoints
from theworld.model.checkpoints import WORLD_ADAPTER_NAME, WORLD_ENCODER_DIR  # noqa: F401  (their home, re-exported)
from theworld.model.compat import (
    GENERATE_PASSES_FIRST_ITERATION,
    LEGACY_KEY_MAPPING,
    gemma3_key_mapping,
    init,
    use_portable_key_layout,
)
from theworld.model.configuration import TheWorldConfig
from theworld.model.parameters import ParameterBreakdown, parameter_breakdown, set_trainable, trainable_parts
from theworld.model.projector import WorldProjector
from theworld.world_encoder.vae import CosmosWorldEncoder

logger = logging.getLogger(__name__)


def _is_custom_code(cls) -> bool:
    """Not "custom code" to transformers' init (which would then skip `_init_weights` of modules whose own
    parameters are set, leaving e.g. SigLIP's missing biases 0): missing weights initialise as in Gemma 3."""
    return cls.is_remote_code()


class TheWorldModel(Gemma3Model):
    """Gemma 3's trunk, what `AutoModel` loads; the world path lives in `TheWorld`, so world inputs are refused here."""

    config_class = TheWorldConfig
    is_custom_code = classmethod(_is_custom_code)

    @functools.wraps(Gemma3Model.forward)  # Gemma 3's signature and typing, as seen by transformers
    def forward(self, *args: Any, **kwargs: Any):
        for name in ("world_pixel_values", "world_latents"):
            if kwargs.get(name) is not None:
                raise TheWorldUserError(
                    f"{name} was given to TheWorldModel (the Gemma 3 trunk that AutoModel loads), which has no world "
                    "path: load the checkpoint with TheWorld.from_pretrained or AutoModelForCausalLM"
                )
            kwargs.pop(name, None)
        return super().forward(*args, **kwargs)


class TheWorld(Gemma3ForConditionalGeneration):
    """Gemma 3 whose prompt can carry world tokens computed from the Cosmos-Predict2 VAE."""

    config: TheWorldConfig
    config_class = TheWorldConfig

    def __init__(self, config: TheWorldConfig) -> None:
        # Gemma3ForConditionalGeneration.__init__ with the trunk built once, as `TheWorldModel`.
        Gemma3PreTrainedModel.__init__(self, config)
        self.model = TheWorldModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.world_projector = WorldProjector(config) if config.enable_world else None
        # Attached after loading (see `attach_world_encoder`): its weights come from the Cosmos
        # checkpoint, not from TheWorld's, and it is optional when cached latents are used.
        self.world_encoder: CosmosWorldEncoder | None = None
        self.post_init()
        # The world model (DiT) of world rollouts, attached after loading when world_rollout_frames > 0
        # (`attach_world_model`). Kept outside the module tree: frozen, never saved, never trained here.
        self.__dict__["world_model"] = None

    # ----------------------------------------------------------------------------------------
    # initialisation and trainability

    is_custom_code = classmethod(_is_custom_code)

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, WorldProjector):
            # transformers 5 builds on the meta device: anything not set here is garbage after a
            # load from a plain Gemma checkpoint. Linear layers are handled by the parent.
            init.zeros_(module.temporal_embedding)
            init.constant_(module.output_scale, self.config.world_embed_rms or 1.0)
            if module.imagined_embedding is not None:  # world rollouts (K > 0) only
                init.zeros_(module.rollout_temporal_embedding)
                init.zeros_(module.imagined_embedding)

    def apply_freezing(self) -> None:
        """Set requires_grad from the config's freeze flags, as `from_pretrained` does; world modules always train."""
        set_trainable(self, trainable_parts(self.config))

    def enable_input_require_grads(self) -> None:
        """Gemma's hooks, less the one on a frozen vision tower: it would make the backward recompute and
        differentiate all of SigLIP for gradients nothing uses (252 MiB instead of 63 per 896 px image at 4b)."""
        super().enable_input_require_grads()
        vision = self.model.vision_tower
        if any(p.requires_grad for p in vision.parameters()):
            return
        patch_hooks = vision.get_input_embeddings()._forward_hooks
        kept = [hook for hook in self._require_grads_hooks if hook.id not in patch_hooks]
        for hook in self._require_grads_hooks:
            if hook.id in patch_hooks:
                hook.remove()
        self._require_grads_hooks = kept
        if kept:
            self._require_grads_hook = kept[0]
        elif hasattr(self, "_require_grads_hook"):
            del self._require_grads_hook

    def get_trainable_parameters(self) -> tuple[int, int, float]:
        """(trainable, total, percent) over unique parameters (tied weights counted once)."""
        breakdown = self.parameter_breakdown()
        return breakdown.trainable, breakdown.total, breakdown.trainable_percent

    def parameter_breakdown(self) -> ParameterBreakdown:
        """Parameters per component (SigLIP, language model, VAE encoder, world projector, ...): count, trainable."""
        return parameter_breakdown(self)

    # ----------------------------------------------------------------------------------------
    # world path

    def attach_world_encoder(self, encoder: CosmosWorldEncoder) -> None:
        """Attach the (frozen by default) VAE encoder; its weights are never saved in model.safetensors."""
        if encoder.latent_channels != self.config.world_latent_channels:
            raise TheWorldUserError(
                f"world encoder has {encoder.latent_channels} latent channels, "
                f"config world_latent_channels={self.config.world_latent_channels}"
            )
        self.world_encoder = encoder
        # Exact keys: transformers' save drops these from the main checkpoint; `save_pretrained`
        # writes the encoder to its own folder instead.
        self._keys_to_ignore_on_save = set(self._keys_to_ignore_on_save or ()) | {
            f"world_encoder.{k}" for k in encoder.state_dict()
        }
        encoder.requires_grad_(not self.config.freeze_cosmos_vae)

    def attach_world_model(self, world_model: Any) -> None:
        """Attach the world model that imagines K latent frames, checked against this config's rollout settings."""
        from theworld.world_model.sampler import check_rollout_input

        if self.config.world_rollout_frames == 0:
            raise TheWorldUserError("attach_world_model: this model has world_rollout_frames=0 (no rollouts)")
        if world_model.settings != self.config.world_rollout_settings():
            raise TheWorldUserError(
                f"the world model was set up for {world_model.settings}, the config asks for "
                f"{self.config.world_rollout_settings()}"
            )
        size = self.config.world_image_size
        check_rollout_input(
            world_model.transformer.config, self.config.world_num_frames, size, size, self.config.world_rollout_frames,
            self.config.world_spatial_compression,
        )  # fmt: skip
        self.__dict__["world_model"] = world_model

    @torch.no_grad()
    def imagine(self, world_pixel_values: torch.Tensor, world_latent_frames: torch.Tensor | None = None) -> torch.Tensor:
        """World pixels (N, 3, T, H, W) in [-1, 1] -> imagined latents (N, 16, K, H/8, W/8), each item from its own
        frames (`world_latent_frames` (N,) when padded along time) and generator, so never batch-dependent."""
        world_model = self.world_model
        if world_model is None:
            raise TheWorldUserError(
                "imagined world latents are needed (world_rollout_frames="
                f"{self.config.world_rollout_frames}) but no world model is loaded: pass a cosmos_model_name whose "
                "folder holds transformer/ and scheduler/, or give precomputed world_imagined_latents (latent cache)"
            )
        param = next(world_model.transformer.parameters())
        device = world_pixel_values.device
        if param.device != device:
            world_model.to(device)
        if world_latent_frames is None:
            return world_model.imagine(world_pixel_values)
        counts = [int(c) for c in world_latent_frames]
        compression = self.config.world_temporal_compression
        imagined: list[torch.Tensor | None] = [None] * len(counts)
        for count in sorted(set(counts)):
            rows = [i for i, c in enumerate(counts) if c == count]
            group = world_pixel_values[rows, :, : 1 + (count - 1) * compression]  # this length's own frames
            for row, item in zip(rows, world_model.imagine(group)):
                imagined[row] = item
        return torch.stack(imagined)  # (N, 16, K, h, w)

    def _imagined_latents(
        self, world_pixel_values: torch.Tensor | None, world_imagined_latents: torch.Tensor | None, items: int
    ) -> torch.Tensor | None:
        """The imagined latents of `items` world items: given (a cache), else imagined; None when K = 0."""
        rollout = self.config.world_rollout_frames
        if rollout == 0:
            if world_imagined_latents is not None:
                raise TheWorldUserError("world_imagined_latents were given but this model has world_rollout_frames=0")
            return None
        if world_imagined_latents is None:
            if world_pixel_values is None:
                raise TheWorldUserError(
                    f"world_rollout_frames={rollout}: world_latents need world_imagined_latents beside them "
                    "(the latent cache stores both), or give world_pixel_values to imagine from"
                )
            world_imagined_latents = self.imagine(world_pixel_values)
        if world_imagined_latents.ndim != 5 or world_imagined_latents.shape[0] != items:
            raise ValueError(
                f"world_imagined_latents must be (N={items}, C, K={rollout}, h, w), got {tuple(world_imagined_latents.shape)}"
            )
        return world_imagined_latents

    def get_world_features(
        self,
        world_pixel_values: torch.Tensor | None = None,
        world_latents: torch.Tensor | None = None,
        world_latent_frames: torch.Tensor | None = None,
        world_imagined_latents: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """World pixels (N, 3, T, H, W) in [-1, 1], or normalised latents (N, 16, Tl, h, w) -> (N, (Tl+K)*tokens, hidden).

        With `world_latent_frames` (N,) (items zero-padded along time) each item is encoded from its own frames
        and the result is a tuple of N tensors (Tl_i*tokens, hidden), in item order."""
        if self.world_projector is None:
            raise TheWorldUserError("world inputs were given but this model has enable_world=False")
        if world_latent_frames is not None:
            return self._get_world_features_per_length(
                world_pixel_values, world_latents, world_latent_frames, world_imagined_latents
            )
        if world_latents is None:
            if world_pixel_values is None:
                raise ValueError("get_world_features needs world_pixel_values or world_latents")
            if self.world_encoder is None:
                raise TheWorldUserError(
                    "world_pixel_values were given but no world encoder is loaded: pass cosmos_model_name= to "
                    "from_pretrained, or give precomputed world_latents"
                )
            world_latents = self.world_encoder(world_pixel_values)
        if world_latents.ndim != 5:
            raise ValueError(f"world_latents must be (N, C, T, h, w), got {tuple(world_latents.shape)}")
        if self.config.world_rollout_frames == 0 and world_imagined_latents is None:
            return self.world_projector(world_latents)  # today's path, unchanged
        imagined = self._imagined_latents(world_pixel_values, world_imagined_latents, world_latents.shape[0])
        return self.world_projector(world_latents, imagined)

    def _get_world_features_per_length(
        self,
        world_pixel_values: torch.Tensor | None,
        world_latents: torch.Tensor | None,
        world_latent_frames: torch.Tensor,
        world_imagined_latents: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        padded = world_latents if world_latents is not None else world_pixel_values
        if padded is None:
            raise ValueError("get_world_features needs world_pixel_values or world_latents")
        counts = [int(c) for c in world_latent_frames]
        if len(counts) != padded.shape[0]:
            raise ValueError(f"world_latent_frames has {len(counts)} counts for {padded.shape[0]} world items")
        compression = self.config.world_temporal_compression

        def frames_of(count: int) -> int:  # input frames holding `count` latent frames
            return count if world_latents is not None else 1 + (count - 1) * compression

        if any(c < 1 or frames_of(c) > padded.shape[2] for c in counts):
            raise ValueError(f"world_latent_frames {counts} do not fit world inputs of {padded.shape[2]} frames")
        if all(frames_of(c) == padded.shape[2] for c in counts):  # one length: the usual path
            return self.get_world_features(world_pixel_values, world_latents, world_imagined_latents=world_imagined_latents)
        features: list[torch.Tensor | None] = [None] * len(counts)
        for count in sorted(set(counts)):
            rows = [i for i, c in enumerate(counts) if c == count]
            group = padded[rows, :, : frames_of(count)]  # (n, C, frames, H, W): this length's own frames
            key = "world_latents" if world_latents is not None else "world_pixel_values"
            imagined = world_imagined_latents[rows] if world_imagined_latents is not None else None  # (n, 16, K, h, w)
            for row, feature in zip(rows, self.get_world_features(**{key: group}, world_imagined_latents=imagined)):
                features[row] = feature  # (count * tokens, hidden)
        return tuple(features)

    def get_world_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        world_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) mask of world placeholders (from `input_ids`, else the embeddings); raises when the count is off."""
        if input_ids is None:
            world_id = torch.full((), self.config.world_token_id, dtype=torch.long, device=inputs_embeds.device)
            mask = (inputs_embeds == self.get_input_embeddings()(world_id)).all(-1)
        else:
            mask = input_ids == self.config.world_token_id
        if world_features is not None:
            n_tokens = int(mask.sum())
            n_features = world_features.shape[0] * world_features.shape[1]
            if n_tokens != n_features:
                raise ValueError(
                    f"World features and world tokens do not match: {n_tokens} world placeholder tokens in the "
                    f"input, {n_features} world features ({world_features.shape[0]} items x {world_features.shape[1]} "
                    f"tokens; world_tokens_per_frame={self.config.world_tokens_per_frame})"
                )
        return mask

    def _world_token_type_ids(self, world_mask: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """Mark world placeholders 1 so Gemma's mask makes the world block bidirectional."""
        world = world_mask.to(torch.long)
        return world if token_type_ids is None else torch.maximum(token_type_ids, world)

    def _mask_placeholder_labels(self, input_ids: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None or input_ids is None:
            return labels
        placeholders = input_ids == self.config.image_token_id
        if self.config.world_token_id is not None:
            placeholders |= input_ids == self.config.world_token_id
        return labels.masked_fill(placeholders, -100)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        world_pixel_values: torch.Tensor | None = None,
        world_latents: torch.Tensor | None = None,
        world_latent_frames: torch.Tensor | None = None,
        world_imagined_latents: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | Gemma3CausalLMOutputWithPast:
        r"""Gemma 3's forward, plus world inputs for the world placeholder tokens of the prompt.

        world_pixel_values (`torch.Tensor` of shape `(num_world_items, 3, frames, height, width)`, *optional*):
            Frames in [-1, 1] for the world encoder (the processor's output); one item per world block.
        world_latents (`torch.Tensor` of shape `(num_world_items, 16, latent_frames, h, w)`, *optional*):
            Normalised VAE latents instead of pixels (e.g. from a latent cache).
        world_latent_frames (`torch.Tensor` of shape `(num_world_items,)`, *optional*):
            Each item's latent frames when a batch mixes clip lengths (inputs padded along time).
        world_imagined_latents (`torch.Tensor` of shape `(num_world_items, 16, K, h, w)`, *optional*):
            With world_rollout_frames K > 0: imagined latents (e.g. from a latent cache) instead of a
            rollout of the world model here.

        Every other argument is Gemma 3's.
        """
        labels = self._mask_placeholder_labels(input_ids, labels)
        gemma_kwargs = dict(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        if world_pixel_values is None and world_latents is None:
            self._check_no_orphan_world_block(input_ids, past_key_values)
            # No world inputs: Gemma 3, untouched.
            return super().forward(
                input_ids=input_ids,
                pixel_values=pixel_values,
                token_type_ids=token_type_ids,
                inputs_embeds=inputs_embeds,
                **gemma_kwargs,
            )

        if inputs_embeds is None:
            # Text embeddings, with Gemma's own guard for an out-of-vocabulary image token id.
            llm_input_ids = input_ids
            if self.config.image_token_id >= self.model.vocab_size:
                llm_input_ids = input_ids.masked_fill(input_ids == self.config.image_token_id, 0)
            inputs_embeds = self.get_input_embeddings()(llm_input_ids)  # (B, L, hidden)
        # (imagined latents only when given: a K = 0 model's call is the one it always was)
        imagined = {} if world_imagined_latents is None else {"world_imagined_latents": world_imagined_latents}
        world_features = self.get_world_features(world_pixel_values, world_latents, world_latent_frames, **imagined)
        if isinstance(world_features, tuple):  # items of different lengths, in prompt order
            world_features = torch.cat(world_features).unsqueeze(0)  # (1, sum of Tl_i*tokens, hidden)
        # world_features: (N, Tl*tokens, hidden)
        world_mask = self.get_world_placeholder_mask(input_ids, inputs_embeds, world_features)  # (B, L)

        if pixel_values is not None:
            image_features = self.model.get_image_features(pixel_values)
            # transformers 5 returns a ModelOutput with the projected features as `pooler_output`; 4.x the tensor.
            image_features = getattr(image_features, "pooler_output", image_features)
            image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            image_mask = self.model.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, image_features=image_features)
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features)

        world_features = world_features.to(inputs_embeds.device, inputs_embeds.dtype)
        inputs_embeds = inputs_embeds.masked_scatter(world_mask.unsqueeze(-1).expand_as(inputs_embeds), world_features)

        if self.config.world_bidirectional:
            token_type_ids = self._world_token_type_ids(world_mask, token_type_ids)
        return super().forward(input_ids=None, inputs_embeds=inputs_embeds, token_type_ids=token_type_ids, **gemma_kwargs)

    def _check_no_orphan_world_block(self, input_ids: torch.Tensor | None, past_key_values: Any) -> None:
        """A prompt with world placeholders but no world inputs would run on placeholder embeddings."""
        if input_ids is None or self.world_projector is None or self.config.world_token_id is None:
            return
        if past_key_values is not None and past_key_values.get_seq_length() > 0:
            return  # decoding: the world block was consumed at prefill
        n = int((input_ids == self.config.world_token_id).sum())
        if n:
            raise ValueError(
                f"the input holds {n} world placeholder tokens but no world_pixel_values or world_latents were given"
            )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        use_cache: bool = True,
        is_first_iteration: bool = False,
        world_pixel_values: torch.Tensor | None = None,
        world_latents: torch.Tensor | None = None,
        world_latent_frames: torch.Tensor | None = None,
        world_imagined_latents: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        has_world = world_pixel_values is not None or world_latents is not None
        if has_world and self.config.world_bidirectional and kwargs.get("token_type_ids") is not None:
            # Also seen by a mask built outside forward (static caches), so mark world tokens here too.
            world_mask = input_ids == self.config.world_token_id
            kwargs["token_type_ids"] = self._world_token_type_ids(world_mask, kwargs["token_type_ids"])
        if GENERATE_PASSES_FIRST_ITERATION:
            model_inputs = super().prepare_inputs_for_generation(
                input_ids, use_cache=use_cache, is_first_iteration=is_first_iteration, **kwargs
            )
        else:  # transformers 4.x: no such argument; the prefill step is the one at cache position 0
            cache_position = kwargs.get("cache_position")
            is_first_iteration = cache_position is not None and int(cache_position[0]) == 0
            model_inputs = super().prepare_inputs_for_generation(input_ids, use_cache=use_cache, **kwargs)
        if is_first_iteration or not use_cache:
            # World inputs go in with the prompt only; after prefill the cache holds them.
            model_inputs["world_pixel_values"] = world_pixel_values
            model_inputs["world_latents"] = world_latents
            model_inputs["world_latent_frames"] = world_latent_frames
            if world_imagined_latents is not None:
                model_inputs["world_imagined_latents"] = world_imagined_latents
        return model_inputs

    # ----------------------------------------------------------------------------------------
    # loading and saving

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None, *model_args: Any, **kwargs: Any
    ) -> "TheWorld | tuple[TheWorld, dict]":
        """Load a Gemma 3 checkpoint, a TheWorld directory or an adapter directory (`checkpoints.resolve` decides).

        World settings and freeze flags may be passed as keywords (`base_model_name_or_path=` replaces an
        adapter's base); every other keyword is transformers' own."""
        settings = {k: kwargs.pop(k) for k in checkpoints.LOAD_SETTINGS if k in kwargs}
        config = kwargs.pop("config", None)
        resolved = checkpoints.resolve(pretrained_model_name_or_path, config=config, hub_kwargs=kwargs, **settings)
        return cls.from_resolved(resolved, *model_args, **kwargs)

    @classmethod
    def from_resolved(
        cls, resolved: checkpoints.Resolved, *model_args: Any, output_loading_info: bool = False, **kwargs: Any
    ) -> "TheWorld | tuple[TheWorld, dict]":
        """Load what `checkpoints.resolve` found: Gemma's weights through transformers, then the world parts."""
        safety_checker = kwargs.pop("world_safety_checker", None)  # for world rollouts (K > 0): see load_world_model
        if LEGACY_KEY_MAPPING and "key_mapping" not in kwargs:
            kwargs["key_mapping"] = gemma3_key_mapping(cls)
        with checkpoints.adapter_keys_not_missing(cls, resolved):
            model, info = super().from_pretrained(
                resolved.weights, *model_args, config=resolved.config, output_loading_info=True, **kwargs
            )
        checkpoints.finish_loading(model, resolved, info["missing_keys"], safety_checker=safety_checker)
        return (model, info) if output_loading_info else model

    @torch.no_grad()
    def match_world_embedding_scale(self) -> float:
        """Set the projector's output RMS to the RMS of Gemma's scaled text embeddings."""
        embed = self.get_input_embeddings()
        scale = float(getattr(embed, "embed_scale", 1.0))
        rms = float(embed.weight.float().pow(2).mean().sqrt()) * scale
        self.config.world_embed_rms = rms
        self.world_projector.output_scale.fill_(rms)
        return rms

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Weights in Gemma 3's original layout (transformers 4.57 and 5 read it); the VAE encoder in `world_encoder/`."""
        use_portable_key_layout(self)
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.world_encoder is not None and kwargs.get("is_main_process", True):
            self.world_encoder.save_pretrained(Path(save_directory) / WORLD_ENCODER_DIR)
        if self.world_model is not None and kwargs.get("is_main_process", True):
            self.world_model.text.save(save_directory)  # rollouts reload without T5

    def save_world_adapter(self, save_directory: str | os.PathLike, keys: list[str] | None = None) -> Path:
        """Write the adapter file plus a config naming the base checkpoint; `from_pretrained` loads the dir."""
        return checkpoints.save_world_adapter(self, save_directory, keys)

    def load_world_adapter(self, path: str | os.PathLike) -> None:
        """Strict load: every key must exist with its shape, and every world module key must be given."""
        checkpoints.load_world_adapter(self, path)
