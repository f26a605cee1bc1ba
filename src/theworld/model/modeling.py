"""`TheWorld`: Gemma 3 plus a world path, and nothing else changed.

The world path follows Gemma's own image idiom: the processor puts a block of world placeholder
tokens in the prompt, `get_world_features` turns world pixels (or cached latents) into one
embedding per placeholder, and `forward` scatters them in with `masked_scatter`. The sequence
length never changes, so labels, masks, padding, caching and `generate` are Gemma's own.

Without world inputs `forward` is `Gemma3ForConditionalGeneration.forward`, called untouched: the
logits are bit-identical to Gemma 3 loaded from the same checkpoint (tested, fp32 and bf16).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Gemma3ForConditionalGeneration, PretrainedConfig

from theworld.errors import TheWorldUserError
from theworld.model.compat import (
    GENERATE_PASSES_FIRST_ITERATION,
    LEGACY_KEY_MAPPING,
    gemma3_key_mapping,
    init,
    use_portable_key_layout,
)
from theworld.model.configuration import TheWorldConfig
from theworld.model.projector import WorldProjector
from theworld.world_encoder.vae import CosmosWorldEncoder

logger = logging.getLogger(__name__)

WORLD_ADAPTER_NAME = "world_adapter.safetensors"
WORLD_ENCODER_DIR = "world_encoder"
# `from_pretrained` keyword arguments that are TheWorld settings rather than transformers' own.
WORLD_KWARGS = (
    "enable_world",
    "cosmos_model_name",
    "world_num_frames",
    "world_image_size",
    "world_tokens_per_frame",
    "world_projector_type",
    "world_bidirectional",
    "freeze_gemma_vision",
    "freeze_gemma_language",
    "freeze_cosmos_vae",
)
HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "force_download")


class TheWorld(Gemma3ForConditionalGeneration):
    """Gemma 3 whose prompt can carry world tokens computed from the Cosmos-Predict2 VAE."""

    config: TheWorldConfig
    config_class = TheWorldConfig

    def __init__(self, config: TheWorldConfig) -> None:
        super().__init__(config)
        self.world_projector = WorldProjector(config) if config.enable_world else None
        # Attached after loading (see `attach_world_encoder`): its weights come from the Cosmos
        # checkpoint, not from TheWorld's, and it is optional when cached latents are used.
        self.world_encoder: CosmosWorldEncoder | None = None
        # How many forwards received world features, and how many world tokens: evaluation checks
        # these so a "world" result can never silently be a world-free one.
        self.world_forward_count = 0
        self.world_token_count = 0
        self.post_init()
        self.apply_freezing()

    # ----------------------------------------------------------------------------------------
    # initialisation and trainability

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, WorldProjector):
            # transformers 5 builds on the meta device: anything not set here is garbage after a
            # load from a plain Gemma checkpoint. Linear layers are handled by the parent.
            init.zeros_(module.temporal_embedding)
            init.constant_(module.output_scale, self.config.world_embed_rms or 1.0)

    def apply_freezing(self) -> None:
        """Set requires_grad from the config's freeze flags; world modules always train."""
        cfg = self.config
        self.model.vision_tower.requires_grad_(not cfg.freeze_gemma_vision)
        self.model.multi_modal_projector.requires_grad_(not cfg.freeze_gemma_vision)
        self.model.language_model.requires_grad_(not cfg.freeze_gemma_language)
        self.lm_head.requires_grad_(not cfg.freeze_gemma_language)
        if self.world_encoder is not None:
            self.world_encoder.requires_grad_(not cfg.freeze_cosmos_vae)
        if self.world_projector is not None:
            self.world_projector.requires_grad_(True)

    def get_trainable_parameters(self) -> tuple[int, int, float]:
        """(trainable, total, percent) over unique parameters (tied weights counted once)."""
        seen: set[int] = set()
        trainable = total = 0
        for param in self.parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            total += param.numel()
            trainable += param.numel() if param.requires_grad else 0
        return trainable, total, 100.0 * trainable / max(total, 1)

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
        self.apply_freezing()

    def get_world_features(
        self,
        world_pixel_values: torch.Tensor | None = None,
        world_latents: torch.Tensor | None = None,
        world_latent_frames: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """World pixels (N, 3, T, H, W) in [-1, 1], or normalised latents (N, 16, Tl, h, w) -> (N, Tl*tokens, hidden).

        Items of different lengths (a batch mixing images and clips): inputs are zero-padded along
        time to the longest item and `world_latent_frames` (N,) gives each item's latent frames.
        Each item is then encoded from its own frames only (items of one length together) and the
        result is a tuple of N tensors (Tl_i*tokens, hidden), in item order.
        """
        if self.world_projector is None:
            raise TheWorldUserError("world inputs were given but this model has enable_world=False")
        if world_latent_frames is not None:
            return self._get_world_features_per_length(world_pixel_values, world_latents, world_latent_frames)
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
        return self.world_projector(world_latents)

    def _get_world_features_per_length(
        self, world_pixel_values: torch.Tensor | None, world_latents: torch.Tensor | None, world_latent_frames: torch.Tensor
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
        if all(frames_of(c) == padded.shape[2] for c in counts):
            return self.get_world_features(world_pixel_values, world_latents)  # one length: the usual path
        features: list[torch.Tensor | None] = [None] * len(counts)
        for count in sorted(set(counts)):
            rows = [i for i, c in enumerate(counts) if c == count]
            group = padded[rows, :, : frames_of(count)]  # (n, C, frames, H, W): this length's own frames
            key = "world_latents" if world_latents is not None else "world_pixel_values"
            for row, feature in zip(rows, self.get_world_features(**{key: group})):
                features[row] = feature  # (count * tokens, hidden)
        return tuple(features)

    def get_world_placeholder_mask(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, world_features: torch.Tensor
    ) -> torch.Tensor:
        """Mask of world placeholders, broadcast over hidden; raises when counts disagree."""
        mask = input_ids == self.config.world_token_id
        n_tokens = int(mask.sum())
        n_features = world_features.shape[0] * world_features.shape[1]
        if n_tokens != n_features:
            raise ValueError(
                f"World features and world tokens do not match: {n_tokens} world placeholder tokens in the "
                f"input, {n_features} world features ({world_features.shape[0]} items x {world_features.shape[1]} "
                f"tokens; world_tokens_per_frame={self.config.world_tokens_per_frame})"
            )
        return mask.unsqueeze(-1).expand_as(inputs_embeds)

    def _world_token_type_ids(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """Mark world placeholders 1 so Gemma's mask makes the world block bidirectional."""
        world = (input_ids == self.config.world_token_id).to(torch.long)
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
        past_key_values: Any = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        world_pixel_values: torch.Tensor | None = None,
        world_latents: torch.Tensor | None = None,
        world_latent_frames: torch.Tensor | None = None,
        **kwargs: Any,
    ):
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
        if input_ids is None:
            raise ValueError("world inputs need input_ids to locate the world placeholder tokens")

        # Text embeddings, with Gemma's own guard for an out-of-vocabulary image token id.
        llm_input_ids = input_ids
        if self.config.image_token_id >= self.model.vocab_size:
            llm_input_ids = input_ids.masked_fill(input_ids == self.config.image_token_id, 0)
        inputs_embeds = self.get_input_embeddings()(llm_input_ids)  # (B, L, hidden)

        if pixel_values is not None:
            image_features = self.model.get_image_features(pixel_values)
            # transformers 5 returns a ModelOutput with the projected features as `pooler_output`; 4.x the tensor.
            image_features = getattr(image_features, "pooler_output", image_features)
            image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            image_mask = self.model.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, image_features=image_features)
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features)

        world_features = self.get_world_features(world_pixel_values, world_latents, world_latent_frames)
        if isinstance(world_features, tuple):  # items of different lengths, in prompt order
            world_features = torch.cat(world_features).unsqueeze(0)  # (1, sum of Tl_i*tokens, hidden)
        # world_features: (N, Tl*tokens, hidden)
        world_features = world_features.to(inputs_embeds.device, inputs_embeds.dtype)
        world_mask = self.get_world_placeholder_mask(input_ids, inputs_embeds, world_features)
        inputs_embeds = inputs_embeds.masked_scatter(world_mask, world_features)
        self.world_forward_count += 1
        self.world_token_count += world_features.shape[0] * world_features.shape[1]

        if self.config.world_bidirectional:
            token_type_ids = self._world_token_type_ids(input_ids, token_type_ids)
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
        **kwargs: Any,
    ) -> dict[str, Any]:
        has_world = world_pixel_values is not None or world_latents is not None
        if has_world and self.config.world_bidirectional and kwargs.get("token_type_ids") is not None:
            # Also seen by a mask built outside forward (static caches), so mark world tokens here too.
            kwargs["token_type_ids"] = self._world_token_type_ids(input_ids, kwargs["token_type_ids"])
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
        return model_inputs

    # ----------------------------------------------------------------------------------------
    # loading and saving

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        """Load from a Gemma 3 checkpoint, a saved TheWorld directory, or a TheWorld adapter directory.

        From Gemma 3 the weights load through `Gemma3ForConditionalGeneration.from_pretrained`
        (never `__init__` + copy) and the world modules are freshly initialised. World settings
        (`enable_world`, `cosmos_model_name`, `world_*`, `freeze_*`) may be passed as keywords; every
        other keyword goes to transformers.
        """
        path = str(pretrained_model_name_or_path)
        overrides = {k: kwargs.pop(k) for k in WORLD_KWARGS if k in kwargs}
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        config = kwargs.pop("config", None)
        from_gemma = False
        if config is None:
            config_dict, _ = PretrainedConfig.get_config_dict(path, **hub_kwargs)
            model_type = config_dict.get("model_type")
            if model_type == TheWorldConfig.model_type:
                if _is_adapter_dir(path):
                    return cls._from_adapter(path, config_dict, overrides, *model_args, **kwargs)
                config = TheWorldConfig.from_dict(config_dict)
            elif model_type == "gemma3":
                config = TheWorldConfig.from_gemma_config(config_dict, base_model_name_or_path=path)
                from_gemma = True
            else:
                raise TheWorldUserError(
                    f"{path} holds a {model_type!r} model; TheWorld loads Gemma 3 ('gemma3') or TheWorld checkpoints"
                )
        elif not isinstance(config, TheWorldConfig):
            config = TheWorldConfig.from_gemma_config(config, base_model_name_or_path=path)
            from_gemma = True
        for key, value in overrides.items():
            setattr(config, key, value)
        config.validate_world()
        new_vocab_size = None
        if config.enable_world and config.world_token_id is None:
            new_vocab_size = _resolve_world_token_ids(config, path, hub_kwargs)

        if LEGACY_KEY_MAPPING and "key_mapping" not in kwargs:
            kwargs["key_mapping"] = gemma3_key_mapping(cls)
        model = super().from_pretrained(path, *model_args, config=config, **kwargs)
        if new_vocab_size is not None and new_vocab_size > model.config.text_config.vocab_size:
            model.resize_token_embeddings(new_vocab_size)
        if from_gemma and model.world_projector is not None and config.world_embed_rms is None:
            model.match_world_embedding_scale()
        if config.enable_world:
            encoder_source = _local_encoder_dir(path) or config.cosmos_model_name
            if encoder_source is not None:
                param = model.get_input_embeddings().weight
                model.attach_world_encoder(
                    CosmosWorldEncoder.from_pretrained(encoder_source, dtype=param.dtype, device=param.device)
                )
            else:
                logger.warning("No cosmos_model_name: this model accepts world_latents only, not world pixels")
        model.apply_freezing()
        return model

    @classmethod
    def _from_adapter(cls, path: str, config_dict: dict, overrides: dict, *model_args: Any, **kwargs: Any):
        """An adapter directory: a full TheWorld config naming its base checkpoint, plus the trainable weights."""
        config = TheWorldConfig.from_dict(config_dict)
        if not config.base_model_name_or_path:
            raise TheWorldUserError(f"{path} is a world adapter but its config has no base_model_name_or_path")
        model = cls.from_pretrained(config.base_model_name_or_path, *model_args, config=config, **overrides, **kwargs)
        model.load_world_adapter(path)
        return model

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
        """Gemma weights and world modules in model.safetensors; the VAE encoder in `world_encoder/`.

        The weights are written in Gemma 3's original on-disk layout (`language_model.model.*`,
        `vision_tower.vision_model.*`), which transformers 4.57 and 5 both read.
        """
        use_portable_key_layout(self)
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.world_encoder is not None and kwargs.get("is_main_process", True):
            self.world_encoder.save_pretrained(Path(save_directory) / WORLD_ENCODER_DIR)

    def world_adapter_state_dict(self, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
        """The trainable world modules under stable key names (`world_projector.*`), or the given keys."""
        state = self.state_dict()
        if keys is None:
            keys = [k for k in state if k.startswith("world_projector.")]
        return {k: state[k].detach().contiguous().cpu() for k in keys}

    def save_world_adapter(self, save_directory: str | os.PathLike, keys: list[str] | None = None) -> Path:
        """Write the adapter file plus a config naming the base checkpoint; `from_pretrained` loads the dir."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.world_adapter_state_dict(keys), str(out / WORLD_ADAPTER_NAME), metadata={"format": "pt"})
        self.config.save_pretrained(out)
        return out / WORLD_ADAPTER_NAME

    def load_world_adapter(self, path: str | os.PathLike) -> None:
        """Strict load: every key must exist with its shape, and every world module key must be given."""
        path = Path(path)
        file = path / WORLD_ADAPTER_NAME if path.is_dir() else path
        if not file.is_file():
            raise TheWorldUserError(f"no world adapter at {file}")
        adapter = load_file(str(file))
        state = self.state_dict()
        unexpected = sorted(k for k in adapter if k not in state)
        missing = sorted(k for k in state if k.startswith("world_projector.") and k not in adapter)
        wrong_shape = sorted(k for k in adapter if k in state and adapter[k].shape != state[k].shape)
        if unexpected or missing or wrong_shape:
            raise TheWorldUserError(
                f"world adapter {file} does not fit this model: unexpected keys {unexpected}, "
                f"missing keys {missing}, wrong shapes {wrong_shape}"
            )
        with torch.no_grad():
            for key, value in adapter.items():
                state[key].copy_(value.to(state[key].dtype))


def _is_adapter_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, WORLD_ADAPTER_NAME)) and not any(
        name.startswith("model") and name.endswith((".safetensors", ".safetensors.index.json"))
        for name in os.listdir(path)
    )


def _local_encoder_dir(path: str) -> str | None:
    candidate = os.path.join(path, WORLD_ENCODER_DIR)
    return candidate if os.path.isfile(os.path.join(candidate, "config.json")) else None


def _resolve_world_token_ids(config: TheWorldConfig, path: str, hub_kwargs: dict) -> int | None:
    """World marker ids come from the checkpoint's tokenizer (reserved `<unusedN>` tokens)."""
    from transformers import AutoTokenizer

    from theworld.processing.tokens import resolve_world_tokens

    tokenizer = AutoTokenizer.from_pretrained(path, **hub_kwargs)
    tokens = resolve_world_tokens(tokenizer)
    if tokens.added:
        # Only a tokenizer without reserved tokens gets new ones (never the case for Gemma 3);
        # the embedding is resized after loading.
        logger.warning("tokenizer of %s has no reserved <unusedN> tokens: world tokens are new ids", path)
    config.start_of_world_token_id = tokens.start_id
    config.world_token_id = tokens.world_id
    config.end_of_world_token_id = tokens.end_id
    return len(tokenizer) if tokens.added else None
