"""`TheWorldProcessor`: Gemma 3's processor plus, before each image block, a world block `<start_of_world>` +
N x `<world_soft_token>` + `<end_of_world>`, and `world_pixel_values` (N, 3, T, S, S) in [-1, 1] for the VAE.
Clips and mixed lengths: README and docs/serving.md. With `enable_world=False` it is exactly `Gemma3Processor`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Gemma3Processor
from transformers.image_utils import load_image

from theworld.data.images import CORRUPT_IMAGE_ERRORS
from theworld.errors import TheWorldUserError
from theworld.model.configuration import WORLD_DEFAULTS, WorldGeometry
from theworld.processing.tokens import resolve_world_tokens
from theworld.processing.video import Clip, VideoFile, load_video

__all__ = ["Clip", "TheWorldProcessor", "VideoFile", "world_frames_problem", "world_pixels"]

PROCESSOR_KWARGS = ("padding", "padding_side", "truncation", "max_length", "pad_to_multiple_of", "return_tensors")
# The model config's world settings the processor takes (the same names on both).
CONFIG_KEYS = (
    "enable_world", "world_image_size", "world_tokens_per_frame", "world_num_frames", "world_temporal_compression",
    "world_rollout_frames",
)  # fmt: skip


class TheWorldProcessor(Gemma3Processor):
    """Gemma 3 processor that also expands world blocks and prepares the VAE's input pixels."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        image_seq_length: int = 256,
        enable_world: bool = WORLD_DEFAULTS["enable_world"],
        world_image_size: int = WORLD_DEFAULTS["world_image_size"],
        world_tokens_per_frame: int = WORLD_DEFAULTS["world_tokens_per_frame"],
        world_num_frames: int = WORLD_DEFAULTS["world_num_frames"],
        world_temporal_compression: int = WORLD_DEFAULTS["world_temporal_compression"],
        world_clip_frame: str = "last",
        world_rollout_frames: int = WORLD_DEFAULTS["world_rollout_frames"],
        **kwargs: Any,
    ) -> None:
        super().__init__(image_processor, tokenizer, chat_template=chat_template, image_seq_length=image_seq_length, **kwargs)
        if world_clip_frame not in ("last", "first"):
            raise ValueError(f"world_clip_frame={world_clip_frame!r}: expected 'last' or 'first'")
        self.enable_world = enable_world
        self.world_image_size = world_image_size
        self.world_tokens_per_frame = world_tokens_per_frame
        self.world_num_frames = world_num_frames
        self.world_temporal_compression = world_temporal_compression
        self.world_clip_frame = world_clip_frame
        self.world_rollout_frames = world_rollout_frames  # K imagined latent frames per world block
        tokens = resolve_world_tokens(tokenizer)
        self.start_of_world_token, self.world_token, self.end_of_world_token = tokens.start, tokens.world, tokens.end
        self.world_token_id = tokens.world_id

    @classmethod
    def from_model_config(cls, name_or_path: str, config: Any, **kwargs: Any) -> TheWorldProcessor:
        """The tokenizer and image processor at `name_or_path`, with the world settings of a `TheWorldConfig`."""
        return cls.from_pretrained(name_or_path, **{key: getattr(config, key) for key in CONFIG_KEYS}, **kwargs)

    @property
    def world_geometry(self) -> WorldGeometry:
        """This processor's world settings as the one geometry object (tokens per item, clip lengths)."""
        return WorldGeometry(
            self.world_image_size, self.world_tokens_per_frame, self.world_num_frames, self.world_temporal_compression,
            rollout_frames=self.world_rollout_frames,
        )

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Gemma 3's save, with a tokenizer config that transformers 4.57 and 5 both read."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        make_tokenizer_config_portable(save_directory)
        return result

    @property
    def model_input_names(self) -> list[str]:
        return super().model_input_names + ["world_pixel_values", "world_latent_frames"]

    # ------------------------------------------------------------------------------------------
    def world_tokens_for(self, visual: Any) -> int:
        return self.world_geometry.tokens_for_frames(len(visual) if isinstance(visual, Clip) else 1)

    def load_visual(self, visual: Any) -> Any:
        """A `VideoFile` decoded into a `Clip` with this processor's `world_num_frames`; others unchanged."""
        if isinstance(visual, VideoFile):
            return load_video(visual, self.world_num_frames, temporal_compression=self.world_temporal_compression)
        return visual

    def gemma_image(self, visual: Any) -> Any:
        """What Gemma's image path sees: the image, or one frame of a clip."""
        if isinstance(visual, Clip):
            if not visual:
                raise ValueError("a clip has no frames")
            return visual[-1] if self.world_clip_frame == "last" else visual[0]
        return visual

    def world_pixels(self, visual: Any) -> np.ndarray:
        """(3, T, S, S) float32 in [-1, 1] for the VAE: `world_pixels` with this processor's settings."""
        return world_pixels(visual, self.world_image_size, self.world_num_frames, self.world_temporal_compression)

    def insert_world_blocks(self, text: str, visuals: Sequence[Any]) -> str:
        parts = text.split(self.boi_token)
        if len(parts) - 1 != len(visuals):
            raise ValueError(
                f"a prompt has {len(parts) - 1} {self.boi_token} markers but {len(visuals)} images/clips were given"
            )
        out = parts[0]
        for visual, part in zip(visuals, parts[1:]):
            block = self.start_of_world_token + self.world_token * self.world_tokens_for(visual) + self.end_of_world_token
            out += block + self.boi_token + part
        return out

    # ------------------------------------------------------------------------------------------
    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any):
        if images is None:
            return super().__call__(images=None, text=text, **kwargs)
        texts, visuals = _nest(images, text)
        visuals = [[self.load_visual(v) for v in sample] for sample in visuals]
        gemma_images = [[_to_pil(self.gemma_image(v)) for v in sample] for sample in visuals]
        if not self.enable_world:
            return super().__call__(images=gemma_images, text=text if texts is None else texts, **kwargs)
        if texts is None:
            texts = [" ".join([self.boi_token] * len(sample)) for sample in visuals]
        texts = [self.insert_world_blocks(t, v) for t, v in zip(texts, visuals)]
        out = super().__call__(images=gemma_images, text=texts, **kwargs)
        pixels = [self.world_pixels(v) for sample in visuals for v in sample]
        if pixels:
            as_tensor = kwargs.get("return_tensors") == "pt"
            longest = max(p.shape[1] for p in pixels)
            # (N, 3, T, S, S); items shorter than the longest are zero-padded at the end of time
            stacked = np.stack([np.pad(p, ((0, 0), (0, longest - p.shape[1]), (0, 0), (0, 0))) for p in pixels])
            out["world_pixel_values"] = torch.from_numpy(stacked) if as_tensor else stacked
            if any(p.shape[1] != longest for p in pixels):
                counts = np.array([self.world_geometry.latent_frames(p.shape[1]) for p in pixels])
                out["world_latent_frames"] = torch.from_numpy(counts) if as_tensor else counts  # (N,) int64
        return out

    def apply_chat_template(
        self,
        conversation: list[dict] | list[list[dict]],
        chat_template: str | None = None,
        tokenize: bool = False,
        return_dict: bool = False,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        **kwargs: Any,
    ):
        """Render with Gemma's chat template; images and clips ({"type": "video", "video": frames}) become
        Gemma image markers, and `__call__` adds the world blocks."""
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = conversation if batched else [conversation]
        extracted = [_extract_visuals(c, self.world_num_frames, self.world_temporal_compression) for c in conversations]
        stripped, visuals = zip(*extracted) if extracted else ((), ())
        processor_kwargs = {k: kwargs.pop(k) for k in PROCESSOR_KWARGS if k in kwargs}
        rendered = super().apply_chat_template(
            list(stripped) if batched else stripped[0],
            chat_template=chat_template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            **kwargs,
        )
        if not tokenize:
            return rendered
        texts = list(rendered) if batched else [rendered]
        bos = self.tokenizer.bos_token
        # The template already writes BOS; the tokenizer must not add a second one.
        processor_kwargs["add_special_tokens"] = not (bos is not None and texts[0].startswith(bos))
        has_visuals = any(len(v) for v in visuals)
        out = self(text=texts, images=[list(v) for v in visuals] if has_visuals else None, **processor_kwargs)
        return out if return_dict else out["input_ids"]


_STANDARD_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def make_tokenizer_config_portable(directory: Any) -> bool:
    """Rewrite a saved `tokenizer_config.json` that 4.57 can read (True if changed): transformers 5 writes
    `extra_special_tokens` as a list, 4.57 wants named tokens there and the list in `additional_special_tokens`."""
    import json
    from pathlib import Path

    path = Path(directory) / "tokenizer_config.json"
    if not path.is_file():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    extra = data.get("extra_special_tokens")
    if not isinstance(extra, list):
        return False
    data["extra_special_tokens"] = {
        key: value
        for key, value in data.items()
        if key.endswith("_token") and isinstance(value, str) and key not in _STANDARD_SPECIAL_TOKENS
    }
    data.setdefault("additional_special_tokens", extra)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


def world_frames_problem(frames: int, max_frames: int, temporal_compression: int = 4) -> str | None:
    """`WorldGeometry.frames_problem` for callers holding the two numbers (training's preflight check)."""
    return WorldGeometry(num_frames=max_frames, temporal_compression=temporal_compression).frames_problem(frames)


def world_pixels(visual: Any, image_size: int, max_frames: int, temporal_compression: int = 4) -> np.ndarray:
    """An image, `Clip` or `VideoFile` -> (3, T, S, S) float32 in [-1, 1]; a function, so the latent cache
    computes exactly these pixels without a tokenizer."""
    if isinstance(visual, VideoFile):
        visual = load_video(visual, max_frames, temporal_compression=temporal_compression)
    frames = list(visual) if isinstance(visual, Clip) else [visual]
    problem = world_frames_problem(len(frames), max_frames, temporal_compression)
    if problem is not None:
        raise ValueError(problem)
    size = (image_size, image_size)
    arrays = [np.asarray(_to_pil(f).convert("RGB").resize(size, Image.BICUBIC), dtype=np.float32) for f in frames]
    pixels = np.stack(arrays, axis=0) / 127.5 - 1.0  # (T, S, S, 3)
    return pixels.transpose(3, 0, 1, 2)  # (3, T, S, S)


def _to_pil(visual: Any) -> Image.Image:
    if isinstance(visual, Image.Image):
        return visual
    if isinstance(visual, np.ndarray):
        return Image.fromarray(visual)
    if isinstance(visual, (str, os.PathLike)):
        return load_image_source(os.fspath(visual))
    raise TypeError(f"unsupported image type {type(visual).__name__}: give a PIL image, a path or a URL")


class ImageSourceError(TheWorldUserError, OSError):
    """An image path that is missing or unreadable (an OSError, as PIL's own); the message names the file."""


_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]{64,}$")


def load_image_source(source: str) -> Image.Image:
    """A path, URL or base64 string -> RGB PIL image, as transformers' `load_image` gives it, with errors that
    name the file (transformers reads a mistyped path as bad base64)."""
    if source.startswith(("http://", "https://")):
        return load_image(source)
    if os.path.isfile(source):
        try:
            return load_image(source)  # EXIF-rotated, converted to RGB: every pixel decoded here
        except CORRUPT_IMAGE_ERRORS as err:
            raise ImageSourceError(f"image file {source} cannot be read ({type(err).__name__}: {err})") from err
    if source.startswith("data:image/") or _BASE64.match(source):
        try:
            return load_image(source)
        except ValueError as err:
            raise ImageSourceError(f"image {source[:40]!r}...: not a file, and not decodable as base64 image data") from err
    where = "" if os.path.isabs(source) else f" (relative to the working directory {os.getcwd()})"
    raise ImageSourceError(f"image file not found: {source}{where}")


def _nest(images: Any, text: Any) -> tuple[list[str] | None, list[list[Any]]]:
    """Per-sample lists of visuals (an image or a `Clip`), aligned with the texts."""
    texts = [text] if isinstance(text, str) else (list(text) if text is not None else None)

    def as_list(sample: Any) -> list[Any]:
        return list(sample) if isinstance(sample, (list, tuple)) and not isinstance(sample, Clip) else [sample]

    if texts is None or len(texts) == 1:
        nested = [as_list(images)]
        if len(nested[0]) == 1 and isinstance(nested[0][0], (list, tuple)) and not isinstance(nested[0][0], Clip):
            nested = [list(nested[0][0])]
    else:
        if not isinstance(images, (list, tuple)) or len(images) != len(texts):
            raise ValueError(f"{len(texts)} texts need a list of {len(texts)} per-sample image lists")
        nested = [as_list(sample) for sample in images]
    return texts, nested


def _extract_visuals(conversation: list[dict], num_frames: int, temporal_compression: int) -> tuple[list[dict], list[Any]]:
    """Replace image/video items (frames or a video file) by bare Gemma image items; return the visuals in order."""
    # Shallow copies: each message's content list is rebuilt below, so the caller's is never
    # changed, and in-memory images and frames are not copied.
    conversation = [dict(message) for message in conversation]
    visuals: list[Any] = []
    for message in conversation:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        new_content = []
        for item in content:
            kind = item.get("type")
            if kind == "image":
                source = next((item[k] for k in ("image", "url", "path") if k in item), None)
                if source is None:
                    raise ValueError(f"an image item has no image/url/path: {item}")
                visuals.append(_to_pil(source))
                new_content.append({"type": "image"})
            elif kind == "video":
                frames = item.get("video")
                if isinstance(frames, (str, os.PathLike)):
                    frames = load_video(frames, num_frames, fps=item.get("fps"), temporal_compression=temporal_compression)
                if not isinstance(frames, (list, tuple)):
                    raise ValueError(
                        f"a video item must give a video file path or a list of frames, got {type(frames).__name__}"
                    )
                times = frames.frame_times if isinstance(frames, Clip) else None
                visuals.append(Clip((_to_pil(f) for f in frames), frame_times=times))
                new_content.append({"type": "image"})
            else:
                new_content.append(item)
        message["content"] = new_content
    return conversation, visuals
