"""A disk cache of normalised world latents, so the frozen VAE encodes each training visual once.

In every normal training stage the Cosmos VAE is frozen: its latents for an image never change,
yet encoding one 512x512 frame costs far more than the rest of an `align` step. `LatentCache`
encodes every unique visual of a data set once (`build`) and serves the latents back
(`latents_for`) for the collator to pass to the model as `world_latents`.

Layout of a cache folder::

    manifest.json                     what makes the latents valid (see below), written once
    latents-00000-<token>.safetensors  a shard: one tensor (16, Tl, h, w) per visual, named by key

**Keys.** A visual's key is the sha256 of its *world pixels*, the exact float32 array
(3, T, S, S) that `TheWorldProcessor.world_pixels` gives the VAE, combined with the
preprocessing settings (`world_image_size`, temporal compression, preprocessing version). Hashing
decoded pixels rather than file bytes was chosen because: visuals may be in-memory PIL images
(Hub data sets, embedded bytes) that have no file; the same picture under two paths (or
re-saved) is one key and is encoded once; and the key certifies exactly what the VAE saw, so a
change to the preprocessing turns into a clear "not cached" error instead of a stale hit. The
price is a decode + resize + hash per lookup (milliseconds, against ~13 s of VAE per 512x512
frame on a CPU). For files it is mostly avoided: each shard also records *aliases*, (absolute
path, size, mtime_ns) of a visual's file(s) -> key, so a lookup of an unchanged file needs no
decode. A changed file has a new size or mtime, misses the alias and is hashed again.

**Validity.** `manifest.json` records the world encoder's identity (sha256 of its config and of
its encoder weights as loaded, including their dtype), the latents mean/std it normalises with,
`world_image_size`, the temporal compression, the storage dtype and the preprocessing version.
`LatentCache.open` compares them with the encoder and settings in use: a cache built with another
VAE or size is refused with a `TheWorldUserError` naming each difference, or cleared and rebuilt
with `on_stale="rebuild"`; it is never silently used. `world_num_frames` is recorded but not
compared: it only caps clip length, and a clip's latents do not depend on it (a longer clip is a
different key, hence a clear miss).

**Writes** are atomic: a shard is written to a temporary file, fsynced and renamed into place,
and holds its own index (tensor names), aliases and checksums, so there is no second file to keep
consistent. A build that stops keeps every finished shard; building again skips what is present
(resumable). Shard names carry a random token, so two builders never overwrite each other (they
may duplicate work: build from one process, e.g. rank 0, then open the cache everywhere).
Temporary files are named `.<shard>.<host>.<pid>.tmp`: the next build deletes those whose writer
no longer runs on this host (a killed build), never a live writer's, and any older than an hour.

**Integrity.** Latents are checked twice: `build` refuses to store a non-finite latent (naming the
visual), and every shard records the sha256 of each tensor (dtype, shape and bytes) in its
metadata, which `latents_for` verifies on every read. A damaged shard (a flipped bit, a NaN
written over a value) raises `LatentCacheCorruptError` naming the shard and the visual, instead of
feeding a wrong latent to training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from theworld.errors import TheWorldUserError
from theworld.processing.processor import Clip, world_pixels
from theworld.training.run_lock import this_host
from theworld.world_encoder.vae import ENCODER_PREFIXES, CosmosWorldEncoder

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
CACHE_FORMAT = "theworld-latent-cache"
CACHE_VERSION = 2  # 2: shards carry per-tensor sha256 (caches of version 1 are refused: rebuild)
# Bump when `processing.processor.world_pixels` changes what it produces: old caches then miss.
PREPROCESS_VERSION = "rgb-pil-bicubic-minus1-1-v1"
KEY_SCHEME = "sha256(preprocess settings + shape + float32 world pixels)"
SHARD_PATTERN = re.compile(r"^latents-(\d+)-([0-9a-f]+)\.safetensors$")
TMP_SUFFIX = ".tmp"
# .<shard or manifest name>.<host>.<pid>.tmp (host: [A-Za-z0-9._-], see run_lock.this_host)
TMP_PATTERN = re.compile(r"^\.(latents-\d+-[0-9a-f]+\.safetensors|manifest\.json)\.(.+)\.(\d+)\.tmp$")
TMP_MAX_AGE_S = 3600.0
ALIASES_METADATA = "theworld_aliases"
CHECKSUMS_METADATA = "theworld_sha256"
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ON_STALE = ("error", "rebuild")
MAX_OPEN_SHARDS = 64


class LatentCacheCorruptError(TheWorldUserError):
    """A shard's bytes no longer match what was written (checksum mismatch, missing checksums)."""


class LatentCacheMissError(TheWorldUserError):
    """A visual asked of the cache was never cached (or its file changed since the build)."""

    def __init__(self, message: str, visual: Any = None) -> None:
        super().__init__(message)
        self.visual = visual


# ------------------------------------------------------------------------------------------------
# settings and encoder identity


@dataclass(frozen=True)
class CacheSettings:
    """The preprocessing and storage settings latents depend on.

    world_image_size: side of the square frames given to the VAE.
    world_num_frames: the longest clip the run accepts (recorded, not compared; see module doc).
    world_temporal_compression: the VAE's causal time compression (4 for Wan 2.1).
    dtype: storage dtype of the cached latents: "float32" (exact) or "bfloat16"/"float16" (half
        the disk; latents are rounded once, as a bf16 run would round them anyway).
    """

    world_image_size: int
    world_num_frames: int = 1
    world_temporal_compression: int = 4
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise TheWorldUserError(f"latent cache dtype={self.dtype!r}: expected one of {sorted(STORAGE_DTYPES)}")
        if self.world_image_size <= 0 or self.world_image_size % 8:
            raise TheWorldUserError(f"world_image_size={self.world_image_size}: expected a positive multiple of 8")
        if self.world_num_frames < 1 or (self.world_num_frames - 1) % self.world_temporal_compression:
            raise TheWorldUserError(
                f"world_num_frames={self.world_num_frames}: clips need "
                f"{self.world_temporal_compression}k+1 frames (1, 5, 9, 17, ...)"
            )

    @classmethod
    def from_processor(cls, processor: Any, dtype: str = "float32") -> CacheSettings:
        """Settings matching a `TheWorldProcessor` (or anything with its `world_*` attributes)."""
        return cls(
            world_image_size=int(processor.world_image_size),
            world_num_frames=int(processor.world_num_frames),
            world_temporal_compression=int(processor.world_temporal_compression),
            dtype=dtype,
        )

    @classmethod
    def from_model_config(cls, config: Any, dtype: str = "float32") -> CacheSettings:
        """Settings matching a `TheWorldConfig`."""
        return cls.from_processor(config, dtype=dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.dtype]

    def key_tag(self) -> str:
        """The preprocessing part of every key: pixels equal under other settings are other keys."""
        return f"{PREPROCESS_VERSION}|size={self.world_image_size}|tc={self.world_temporal_compression}"


@dataclass(frozen=True)
class EncoderFingerprint:
    """Identity of a world encoder: what decides the latents it produces for given pixels."""

    config_sha256: str
    weights_sha256: str
    weights_dtype: str
    latents_mean: tuple[float, ...]
    latents_std: tuple[float, ...]
    source: str = ""  # informational only (where it was loaded from); never compared

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["latents_mean"] = list(self.latents_mean)
        out["latents_std"] = list(self.latents_std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderFingerprint:
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data["latents_mean"] = tuple(float(x) for x in data.get("latents_mean", ()))
        data["latents_std"] = tuple(float(x) for x in data.get("latents_std", ()))
        return cls(**data)


def fingerprint_encoder(encoder: CosmosWorldEncoder, source: str = "") -> EncoderFingerprint:
    """Hash a loaded world encoder: its VAE config (private `_*` keys dropped) and encoder weights.

    Only `encoder.*`/`quant_conv.*` tensors are hashed (a full `AutoencoderKLWan` and the encoder
    half loaded by `CosmosWorldEncoder.from_pretrained` give the same fingerprint). Weights are
    hashed as they are held, so an encoder loaded in bf16 differs from the fp32 one, as its
    latents do. About a second for the full-size VAE on a CPU.
    """
    config = {k: v for k, v in dict(encoder.vae.config).items() if not k.startswith("_")}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    digest = hashlib.sha256()
    dtypes: set[str] = set()
    for name, tensor in sorted(encoder.vae.state_dict().items()):
        if not name.startswith(ENCODER_PREFIXES):
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        dtypes.add(str(tensor.dtype).removeprefix("torch."))
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return EncoderFingerprint(
        config_hash,
        digest.hexdigest(),
        ",".join(sorted(dtypes)),
        tuple(float(x) for x in encoder.vae.config.latents_mean),
        tuple(float(x) for x in encoder.vae.config.latents_std),
        source=source,
    )


def fingerprint_pretrained(name_or_path: str | os.PathLike, dtype: torch.dtype | None = None) -> EncoderFingerprint:
    """The fingerprint of the encoder `CosmosWorldEncoder.from_pretrained(name_or_path, dtype)` loads.

    For a training run that reads latents from the cache and never needs the VAE itself.
    """
    encoder = CosmosWorldEncoder.from_pretrained(name_or_path, dtype=dtype)
    return fingerprint_encoder(encoder, source=str(name_or_path))


# ------------------------------------------------------------------------------------------------
# visuals, keys, aliases


class _WorldPreprocessor:
    """The processor's world preprocessing (`processing.processor.world_pixels`) with the cache's
    settings, for lookups without a tokenizer."""

    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings

    def world_pixels(self, visual: Any) -> np.ndarray:
        s = self.settings
        return world_pixels(visual, s.world_image_size, s.world_num_frames, s.world_temporal_compression)


def as_world_visual(visual: Any) -> Any:
    """A sample's visual in the processor's form: a clip (a list of frames) as `Clip`, a Path as str."""
    if isinstance(visual, Clip):
        return Clip(str(f) if isinstance(f, Path) else f for f in visual)
    if isinstance(visual, (list, tuple)):
        return Clip(str(f) if isinstance(f, Path) else f for f in visual)
    if isinstance(visual, Path):
        return str(visual)
    return visual


def _world_pixels(preprocessor: Any, visual: Any) -> np.ndarray:
    """`preprocessor.world_pixels(visual)`, with a failure (unreadable file, bad clip length) naming the visual."""
    try:
        return preprocessor.world_pixels(visual)
    except (OSError, ValueError, TypeError) as err:
        raise TheWorldUserError(f"cannot prepare {describe_visual(visual)} for the world encoder: {err}") from err


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes: what a shard records and `latents_for` checks."""
    tensor = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def content_key(pixels: np.ndarray, settings: CacheSettings) -> str:
    """The cache key of world pixels (3, T, S, S): sha256 of the settings tag, shape and float32 bytes."""
    array = np.ascontiguousarray(pixels, dtype=np.float32)
    digest = hashlib.sha256(f"{settings.key_tag()}|{array.shape}|".encode())
    digest.update(array)
    return digest.hexdigest()


def file_alias(visual: Any) -> str | None:
    """(absolute path, size, mtime_ns) of every frame file, or None if any frame is not a local file."""
    frames = list(visual) if isinstance(visual, Clip) else [visual]
    parts = []
    for frame in frames:
        if not isinstance(frame, str) or "://" in frame:
            return None
        try:
            stat = os.stat(frame)
        except OSError:
            return None
        parts.append([os.path.abspath(frame), stat.st_size, stat.st_mtime_ns])
    return json.dumps(parts, separators=(",", ":"))


def describe_visual(visual: Any) -> str:
    """A short human description of a visual for error messages."""
    if isinstance(visual, (Clip, list, tuple)):
        frames = list(visual)
        if not frames:
            return "an empty clip"
        return f"clip of {len(frames)} frames ({describe_visual(frames[0])} ... {describe_visual(frames[-1])})"
    if isinstance(visual, (str, Path)):
        return str(visual)
    filename = getattr(visual, "filename", "") or ""
    size = getattr(visual, "size", None)
    mode = getattr(visual, "mode", None)
    if size is not None and mode is not None:
        return f"in-memory {mode} image {size[0]}x{size[1]}" + (f" read from {filename}" if filename else "")
    return f"{type(visual).__name__} object"


def iter_visuals(samples: Iterable[Any]) -> Iterator[Any]:
    """Every visual of the samples: a `Sample`'s `visuals()`, or an item taken as one visual."""
    for sample in samples:
        if hasattr(sample, "visuals"):
            yield from sample.visuals()
        else:
            yield sample


# ------------------------------------------------------------------------------------------------
# the cache


@dataclass
class BuildStats:
    """What one `build` did. `unique` counts distinct keys among the samples' visuals."""

    visuals: int = 0
    unique: int = 0
    encoded: int = 0
    already_cached: int = 0
    duplicates: int = 0
    shards_written: int = 0
    seconds_encoding: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.visuals} visuals, {self.unique} unique: {self.encoded} encoded, {self.already_cached} already "
            f"cached, {self.duplicates} repeats; {self.shards_written} shard(s) written"
        )


@dataclass
class _Pending:
    """Latents encoded but not yet in a shard, and aliases learnt but not yet written."""

    latents: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class LatentCache:
    """Normalised world latents on disk, keyed by visual content. Use `LatentCache.open`."""

    def __init__(
        self, cache_dir: Path, settings: CacheSettings, fingerprint: EncoderFingerprint, processor: Any = None
    ) -> None:
        self.cache_dir = cache_dir
        self.settings = settings
        self.fingerprint = fingerprint
        self._preprocessor = processor if processor is not None else _WorldPreprocessor(settings)
        self._index: dict[str, str] = {}  # key -> shard file name
        self._sha256: dict[str, str] = {}  # key -> recorded checksum of its latents
        self._aliases: dict[str, str] = {}  # file alias -> key (from shards, plus this process's lookups)
        self._stored_aliases: set[str] = set()  # the aliases some shard on disk records
        self._handles: OrderedDict[str, Any] = OrderedDict()  # open shards, most recent last
        self._handles_pid = os.getpid()
        self._scan()

    # -------------------------------------------------------------------------------------------
    # opening

    @classmethod
    def open(
        cls,
        cache_dir: str | os.PathLike,
        encoder_fingerprint: EncoderFingerprint | CosmosWorldEncoder | dict[str, Any],
        settings: CacheSettings,
        on_stale: str = "error",
        processor: Any = None,
    ) -> LatentCache:
        """Open (or create) the cache in `cache_dir` for this encoder and these settings.

        `encoder_fingerprint` is a `fingerprint_encoder`/`fingerprint_pretrained` result (or the
        encoder itself). A cache whose manifest disagrees with it or with `settings` raises
        `TheWorldUserError` naming every difference (`on_stale="error"`), or is cleared
        (`on_stale="rebuild"`). `processor` (optional) is the `TheWorldProcessor` whose
        `world_pixels` computes lookup keys; by default the same code runs from `settings`.
        """
        if on_stale not in ON_STALE:
            raise ValueError(f"on_stale={on_stale!r}: expected one of {ON_STALE}")
        fingerprint = _as_fingerprint(encoder_fingerprint)
        if processor is not None:
            _check_processor(processor, settings)
        root = Path(cache_dir)
        if root.exists() and not root.is_dir():
            raise TheWorldUserError(f"latent cache {root} exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        manifest_path = root / MANIFEST_NAME
        if manifest_path.exists():
            problems = _manifest_differences(manifest_path, fingerprint, settings)
            if problems:
                if on_stale == "error":
                    raise TheWorldUserError(
                        f"latent cache {root} was built with other settings; its latents are not valid here:\n  - "
                        + "\n  - ".join(problems)
                        + "\nRebuild it (on_stale='rebuild', CLI: theworld cache-latents ... --rebuild) or point "
                        "latent_cache_dir at another folder."
                    )
                logger.warning("latent cache %s is stale (%s): clearing it", root, "; ".join(problems))
                _clear(root)
                _write_manifest(root, fingerprint, settings)
        else:
            ours = [p for p in root.iterdir() if _is_cache_file(p.name)]
            others = [p for p in root.iterdir() if not _is_cache_file(p.name)]
            if others:
                raise TheWorldUserError(
                    f"{root} holds files that are not a latent cache (e.g. {others[0].name}) and no {MANIFEST_NAME}: "
                    "give latent_cache_dir an empty or new folder"
                )
            if ours:
                if on_stale == "error":
                    raise TheWorldUserError(
                        f"latent cache {root} has shards but no {MANIFEST_NAME}, so what built them is unknown; "
                        "rebuild it (on_stale='rebuild', CLI: --rebuild)"
                    )
                logger.warning("latent cache %s has no manifest: clearing it", root)
                _clear(root)
            _write_manifest(root, fingerprint, settings)
        return cls(root, settings, fingerprint, processor)

    def _scan(self) -> None:
        """Index every complete shard: tensor names are keys, metadata holds aliases."""
        self._index.clear()
        self._sha256.clear()
        for path in sorted(self.cache_dir.iterdir()):
            if not SHARD_PATTERN.match(path.name):
                continue
            try:
                with safe_open(str(path), framework="pt") as handle:
                    keys = list(handle.keys())
                    metadata = handle.metadata() or {}
                checksums = json.loads(metadata[CHECKSUMS_METADATA])
            except Exception as err:  # a damaged header, a truncated file (safetensors' own errors), no checksums
                raise LatentCacheCorruptError(
                    f"latent cache shard {path} is unreadable or has no checksums ({type(err).__name__}: {err}); "
                    f"delete it and run `theworld cache-latents` again (only its latents are re-encoded)"
                ) from err
            missing = [k for k in keys if k not in checksums]
            if missing:
                raise LatentCacheCorruptError(
                    f"latent cache shard {path} records no checksum for {len(missing)} latent(s); delete it and run "
                    "`theworld cache-latents` again"
                )
            for key in keys:
                self._index[key] = path.name
                self._sha256[key] = checksums[key]
            aliases = json.loads(metadata.get(ALIASES_METADATA, "{}"))
            self._aliases.update(aliases)
            self._stored_aliases.update(aliases)

    # -------------------------------------------------------------------------------------------
    # reading

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, visual: Any) -> bool:
        return self.key_for(visual) in self._index

    def keys(self) -> list[str]:
        return sorted(self._index)

    def key_for(self, visual: Any) -> str:
        """The cache key of a visual; an unchanged, already-seen file needs no decoding."""
        visual = as_world_visual(visual)
        alias = file_alias(visual)
        if alias is not None and alias in self._aliases:
            return self._aliases[alias]
        key = content_key(_world_pixels(self._preprocessor, visual), self.settings)
        if alias is not None:
            self._aliases[alias] = key  # memo for this process: the next epoch skips the decode
        return key

    def latents_for(self, visual: Any) -> torch.Tensor:
        """Normalised latents (16, Tl, h, w) of an image or clip, in the cache's storage dtype.

        Raises `LatentCacheMissError` (a `TheWorldUserError`) naming the visual if it was never
        cached, e.g. the cache was built from other data or the file changed since.
        """
        key = self.key_for(visual)
        shard = self._index.get(key)
        if shard is None:
            raise LatentCacheMissError(
                f"{describe_visual(visual)} is not in the latent cache {self.cache_dir} ({len(self)} latents): "
                "run `theworld cache-latents` on this training config first (or again, if the file changed "
                "since the cache was built)",
                visual=visual,
            )
        latents = self._handle(shard).get_tensor(key)
        if tensor_sha256(latents) != self._sha256[key]:
            raise LatentCacheCorruptError(
                f"latent cache shard {self.cache_dir / shard} is damaged: the latents of {describe_visual(visual)} "
                f"(key {key[:12]}) do not match their checksum. Delete that shard and run `theworld cache-latents` "
                "again (only its latents are re-encoded)"
            )
        return latents

    def missing(self, samples: Iterable[Any]) -> list[Any]:
        """The samples' visuals that are not cached (each listed once per occurrence)."""
        return [v for v in iter_visuals(samples) if self.key_for(v) not in self._index]

    def check_complete(self, samples: Iterable[Any]) -> None:
        """Raise `LatentCacheMissError` naming up to three missing visuals if any is not cached."""
        missing = self.missing(samples)
        if missing:
            named = "; ".join(describe_visual(v) for v in missing[:3])
            raise LatentCacheMissError(
                f"{len(missing)} visual(s) of the training data are not in the latent cache {self.cache_dir} "
                f"(e.g. {named}): run `theworld cache-latents` on this training config first",
                visual=missing[0],
            )

    def _handle(self, shard: str) -> Any:
        """An open shard; at most MAX_OPEN_SHARDS stay open (a big cache has thousands of shards,
        more than a process may hold file descriptors). A forked dataloader worker opens its own."""
        if self._handles_pid != os.getpid():
            self._handles = OrderedDict()
            self._handles_pid = os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            handle = safe_open(str(self.cache_dir / shard), framework="pt")
            self._handles[shard] = handle
            while len(self._handles) > MAX_OPEN_SHARDS:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(shard)
        return handle

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()  # safetensors handles do not pickle (spawned dataloader workers)
        return state

    # -------------------------------------------------------------------------------------------
    # building

    def build(
        self,
        samples: Iterable[Any],
        encoder: CosmosWorldEncoder,
        processor_like: Any = None,
        batch_size: int = 8,
        shard_size: int = 256,
        progress: bool = True,
    ) -> BuildStats:
        """Encode every unique visual of `samples` that is not cached yet, `batch_size` at a time.

        `samples` are `Sample`s (their `visuals()` are cached) or bare visuals. `processor_like`
        supplies `world_pixels(visual)` (a `TheWorldProcessor`; default: the cache's own
        preprocessing, the same code). Latents go to disk every `shard_size` visuals, so a build
        that stops loses at most one shard's work; calling `build` again resumes. The encoder
        must be the one the cache was opened for (checked by fingerprint).
        """
        if batch_size < 1 or shard_size < 1:
            raise ValueError(f"batch_size={batch_size} and shard_size={shard_size} must be positive")
        problems = _fingerprint_differences(self.fingerprint, fingerprint_encoder(encoder))
        if problems:
            raise TheWorldUserError(
                f"the encoder given to build() is not the one latent cache {self.cache_dir} is for: " + "; ".join(problems)
            )
        preprocessor = processor_like if processor_like is not None else self._preprocessor
        if processor_like is not None:
            _check_processor(processor_like, self.settings)
        _remove_orphaned_temporary_files(self.cache_dir)
        samples = list(samples)
        total = sum(1 for _ in iter_visuals(samples))
        stats = BuildStats()
        seen: set[str] = set()
        batches: dict[tuple[int, ...], list[tuple[str, np.ndarray, Any]]] = {}
        pending = _Pending()
        bar = tqdm(total=total, desc="caching world latents", unit="visual", disable=not progress)
        try:
            for visual in iter_visuals(samples):
                visual = as_world_visual(visual)
                stats.visuals += 1
                bar.update(1)
                alias = file_alias(visual)
                key = self._aliases.get(alias) if alias is not None else None
                pixels = None
                if key is None:
                    pixels = _world_pixels(preprocessor, visual)
                    key = content_key(pixels, self.settings)
                    if alias is not None:
                        self._aliases[alias] = key
                if alias is not None and alias not in self._stored_aliases:
                    pending.aliases[alias] = key
                if key in seen:
                    stats.duplicates += 1
                    continue
                seen.add(key)
                stats.unique += 1
                if key in self._index:
                    stats.already_cached += 1
                    continue
                if pixels is None:  # known alias, latents not written yet (e.g. a build stopped early)
                    pixels = _world_pixels(preprocessor, visual)
                batch = batches.setdefault(tuple(pixels.shape), [])
                batch.append((key, pixels, visual))
                if len(batch) >= batch_size:
                    self._encode(encoder, batches.pop(tuple(pixels.shape)), pending, stats)
                    bar.set_postfix(encoded=stats.encoded)
                if len(pending.latents) >= shard_size:
                    self._flush(pending, stats)
            for shape in list(batches):
                self._encode(encoder, batches.pop(shape), pending, stats)
            if pending.latents or pending.aliases:
                self._flush(pending, stats)
        finally:
            bar.close()
        logger.info("latent cache %s: %s", self.cache_dir, stats.summary())
        return stats

    def _encode(
        self, encoder: CosmosWorldEncoder, batch: list[tuple[str, np.ndarray, Any]], pending: _Pending, stats: BuildStats
    ) -> None:
        start = time.perf_counter()
        pixels = torch.from_numpy(np.stack([p for _, p, _ in batch]))
        with torch.no_grad():
            latents = encoder(pixels).to("cpu", self.settings.torch_dtype)
        for index, (key, _, visual) in enumerate(batch):
            if not bool(torch.isfinite(latents[index]).all()):
                raise TheWorldUserError(
                    f"the world encoder gave non-finite latents for {describe_visual(visual)}; they are not cached "
                    "(training on them would give a NaN model). Check that file, and the encoder's dtype "
                    "(--encoder-dtype float32)"
                )
            pending.latents[key] = latents[index].clone()  # own storage: safetensors refuses shared tensors
        stats.encoded += len(batch)
        stats.seconds_encoding += time.perf_counter() - start

    def _flush(self, pending: _Pending, stats: BuildStats) -> None:
        """Write pending latents (and aliases) as one new shard: temporary file, then rename."""
        numbers = [int(m.group(1)) for p in self.cache_dir.iterdir() if (m := SHARD_PATTERN.match(p.name))]
        name = f"latents-{max(numbers, default=-1) + 1:05d}-{secrets.token_hex(4)}.safetensors"
        tmp = self.cache_dir / _tmp_name(name)
        checksums = {key: tensor_sha256(tensor) for key, tensor in pending.latents.items()}
        metadata = {
            "format": "pt",
            ALIASES_METADATA: json.dumps(pending.aliases, separators=(",", ":")),
            CHECKSUMS_METADATA: json.dumps(checksums, separators=(",", ":")),
        }
        save_file(pending.latents, str(tmp), metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.cache_dir / name)
        for key in pending.latents:
            self._index[key] = name
            self._sha256[key] = checksums[key]
        self._stored_aliases.update(pending.aliases)
        stats.shards_written += 1
        logger.debug("latent cache: wrote %s (%d latents)", name, len(pending.latents))
        pending.latents = {}
        pending.aliases = {}


# ------------------------------------------------------------------------------------------------
# the cache a training config reads (shared by `theworld cache-latents` and the trainer)


def world_config_for(model_name_or_path: str, **world_overrides: Any) -> Any:
    """The `TheWorldConfig` `TheWorld.from_pretrained(model_name_or_path, **overrides)` would use,
    read from config.json alone (no weights). `None` overrides keep the checkpoint's own values."""
    from transformers import PretrainedConfig

    from theworld.model.configuration import TheWorldConfig

    path = str(model_name_or_path)
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(path)
    except OSError as err:
        raise TheWorldUserError(f"model_name_or_path: cannot read the config of {path} ({err})") from err
    model_type = config_dict.get("model_type")
    if model_type == TheWorldConfig.model_type:
        config = TheWorldConfig.from_dict(config_dict)
    elif model_type == "gemma3":
        config = TheWorldConfig.from_gemma_config(config_dict)
    else:
        raise TheWorldUserError(f"model_name_or_path: {path} holds a {model_type!r} model, not Gemma 3 or TheWorld")
    for key, value in world_overrides.items():
        if value is not None:
            setattr(config, key, value)
    try:
        config.validate_world()
    except ValueError as err:
        raise TheWorldUserError(str(err)) from None
    return config


def encoder_source_for(model_name_or_path: str, cosmos_model_name: str | None) -> str:
    """Where `TheWorld.from_pretrained` takes its world encoder from: a TheWorld save's own
    `world_encoder/` folder first, else `cosmos_model_name`."""
    from theworld.model.modeling import WORLD_ENCODER_DIR

    local = os.path.join(str(model_name_or_path), WORLD_ENCODER_DIR)
    if os.path.isfile(os.path.join(local, "config.json")):
        return local
    if not cosmos_model_name:
        raise TheWorldUserError("cosmos_model_name is not set: the latent cache needs to know which world model encodes")
    return str(cosmos_model_name)


_TRAINING_WORLD_KEYS = ("world_image_size", "world_num_frames", "world_tokens_per_frame")


def open_for_training(train_config: Any, on_stale: str = "error") -> LatentCache:
    """The latent cache a `TrainConfig` (`latent_cache_dir`) names, checked against its model and VAE.

    Reads the model config (no weights) for the world settings and hashes the VAE encoder
    weights the model would load (a second or two for the full VAE; the VAE is not kept). Raises
    `TheWorldUserError` when the cache is missing, empty, or was built for another VAE or
    settings. Call `check_complete(samples)` next to fail before step 1 rather than at a miss.
    """
    cache_dir = getattr(train_config, "latent_cache_dir", None)
    if not cache_dir:
        raise TheWorldUserError("latent_cache_dir is not set")
    manifest_path = Path(cache_dir) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise TheWorldUserError(
            f"latent_cache_dir: {cache_dir} holds no latent cache; build it first with "
            "`theworld cache-latents --config <this training config>`"
        )
    overrides = {k: getattr(train_config, k, None) for k in _TRAINING_WORLD_KEYS}
    world_config = world_config_for(train_config.model_name_or_path, **overrides)
    source = encoder_source_for(train_config.model_name_or_path, getattr(train_config, "cosmos_model_name", None))
    try:
        recorded = json.loads(manifest_path.read_text(encoding="utf-8"))
        storage_dtype = recorded["settings"]["dtype"]
        weights_dtype = recorded["encoder"]["weights_dtype"]
    except (OSError, ValueError, KeyError, TypeError):
        storage_dtype, weights_dtype = "float32", ""
    # Hash the VAE as the cache builder held it (its dtype is recorded), so the weights compare.
    load_dtype = STORAGE_DTYPES.get(weights_dtype) if weights_dtype else None
    fingerprint = fingerprint_pretrained(source, dtype=load_dtype)
    settings = CacheSettings.from_model_config(world_config, dtype=storage_dtype if storage_dtype in STORAGE_DTYPES else "float32")
    cache = LatentCache.open(cache_dir, fingerprint, settings, on_stale=on_stale)
    if len(cache) == 0:
        raise TheWorldUserError(
            f"latent cache {cache_dir} is empty: run `theworld cache-latents --config <this training config>`"
        )
    return cache


# ------------------------------------------------------------------------------------------------
# manifest helpers


def _as_fingerprint(value: EncoderFingerprint | CosmosWorldEncoder | dict[str, Any]) -> EncoderFingerprint:
    if isinstance(value, EncoderFingerprint):
        return value
    if isinstance(value, CosmosWorldEncoder):
        return fingerprint_encoder(value)
    if isinstance(value, dict):
        return EncoderFingerprint.from_dict(value)
    raise TypeError(f"encoder_fingerprint: expected an EncoderFingerprint, got {type(value).__name__}")


def _check_processor(processor: Any, settings: CacheSettings) -> None:
    """A processor whose world settings disagree with the cache's would compute other keys."""
    for name in ("world_image_size", "world_temporal_compression"):
        value = getattr(processor, name, None)
        if value is not None and int(value) != getattr(settings, name):
            raise TheWorldUserError(
                f"the processor has {name}={value} but the latent cache settings say {getattr(settings, name)}"
            )


def _manifest(fingerprint: EncoderFingerprint, settings: CacheSettings) -> dict[str, Any]:
    import PIL

    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key_scheme": KEY_SCHEME,
        "preprocess": PREPROCESS_VERSION,
        "encoder": fingerprint.to_dict(),
        "settings": asdict(settings),
        "pillow_version": PIL.__version__,  # informational: resizing is PIL's bicubic
    }


def _write_manifest(root: Path, fingerprint: EncoderFingerprint, settings: CacheSettings) -> None:
    tmp = root / _tmp_name(MANIFEST_NAME)
    tmp.write_text(json.dumps(_manifest(fingerprint, settings), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST_NAME)


def _fingerprint_differences(cached: EncoderFingerprint, current: EncoderFingerprint) -> list[str]:
    problems = []
    if cached.config_sha256 != current.config_sha256:
        problems.append(
            f"world encoder (VAE) config: cache {cached.config_sha256[:12]}, now {current.config_sha256[:12]}"
            + (f" ({cached.source or '?'} vs {current.source or '?'})" if cached.source != current.source else "")
        )
    if cached.weights_sha256 != current.weights_sha256:
        problems.append(
            f"world encoder (VAE) weights: cache sha256 {cached.weights_sha256[:12]} ({cached.weights_dtype}), now "
            f"{current.weights_sha256[:12]} ({current.weights_dtype})"
            + (f"; cache built from {cached.source}, now {current.source}" if cached.source != current.source else "")
        )
    for name in ("latents_mean", "latents_std"):
        old, new = getattr(cached, name), getattr(current, name)
        if len(old) != len(new) or any(abs(a - b) > 1e-7 * max(1.0, abs(a)) for a, b in zip(old, new)):
            problems.append(f"{name}: cache {list(old)[:3]}..., now {list(new)[:3]}...")
    return problems


def _manifest_differences(path: Path, fingerprint: EncoderFingerprint, settings: CacheSettings) -> list[str]:
    """Every reason the cache's latents are invalid for this encoder and these settings."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        cached_fp = EncoderFingerprint.from_dict(manifest["encoder"])
        cached_settings = manifest["settings"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{path} is unreadable ({err})"]
    problems = []
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        problems.append(f"cache format {manifest.get('format')} v{manifest.get('version')}, now {CACHE_FORMAT} v{CACHE_VERSION}")
    if manifest.get("preprocess") != PREPROCESS_VERSION:
        problems.append(f"preprocessing {manifest.get('preprocess')}, now {PREPROCESS_VERSION}")
    problems += _fingerprint_differences(cached_fp, fingerprint)
    for name in ("world_image_size", "world_temporal_compression", "dtype"):
        old, new = cached_settings.get(name), getattr(settings, name)
        if old != new:
            problems.append(f"{name}: cache {old}, now {new}")
    return problems


def _is_cache_file(name: str) -> bool:
    return name == MANIFEST_NAME or bool(SHARD_PATTERN.match(name)) or (name.startswith(".") and name.endswith(TMP_SUFFIX))


def _tmp_name(name: str) -> str:
    """The temporary name a file is written under before its rename: it names the writer (host, pid)."""
    return f".{name}.{this_host()}.{os.getpid()}{TMP_SUFFIX}"


def _remove_orphaned_temporary_files(root: Path, max_age_s: float = TMP_MAX_AGE_S) -> list[str]:
    """Delete the temporary files of writers that died (a killed build), never a live writer's.

    A temporary file names its writer (`_tmp_name`): it is an orphan when that process no longer
    runs on this host. A writer on another host cannot be checked from here; its file (like any
    temporary file of an older naming) is removed once it is older than `max_age_s`, far longer
    than writing one shard takes. Returns the names removed.
    """
    from theworld.training.run_lock import process_alive

    removed = []
    now = time.time()
    for path in root.iterdir():
        match = TMP_PATTERN.match(path.name)
        ours = path.name.startswith((".latents-", f".{MANIFEST_NAME}.")) and path.name.endswith(TMP_SUFFIX)
        if match is None and not ours:
            continue
        try:
            dead = match is not None and process_alive(int(match.group(3)), match.group(2)) is False
            if dead or now - path.stat().st_mtime > max_age_s:
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:  # its writer renamed it meanwhile
            pass
    if removed:
        logger.info("latent cache %s: removed %d temporary file(s) of interrupted builds", root, len(removed))
    return removed


def _clear(root: Path) -> None:
    """Delete the cache's own files only (manifest, shards, temporaries), never anything else."""
    for path in root.iterdir():
        if _is_cache_file(path.name) and path.is_file():
            path.unlink()
