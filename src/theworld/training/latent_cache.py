"""A disk cache of normalised world latents, so the frozen VAE encodes each training visual once
(encoding a 512x512 frame costs far more than the rest of an `align` step). Keys, manifest, checksums
and atomic shards: docs/training.md (Latent cache)."""

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
import PIL
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from theworld.errors import TheWorldUserError
from theworld.processing.processor import Clip, world_pixels
from theworld.training.run_lock import process_alive, this_host
from theworld.training.sources import encoder_source, resolve_model
from theworld.world_encoder.vae import ENCODER_PREFIXES, CosmosWorldEncoder, vae_files

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
CACHE_FORMAT = "theworld-latent-cache"
CACHE_VERSION = 2  # 2: shards carry per-tensor sha256 (caches of version 1 are refused: rebuild)
# Bump when `processing.processor.world_pixels` changes what it produces: old caches then miss.
PREPROCESS_VERSION = "rgb-pil-bicubic-minus1-1-v1"
KEY_SCHEME = "sha256(preprocess settings + shape + float32 world pixels)"
SHARD_PATTERN = re.compile(r"^latents-(\d+)-([0-9a-f]+)\.safetensors$")
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
    """The settings latents depend on; `world_num_frames` is recorded, not compared (a longer clip is another key)."""

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
        """Settings matching a `TheWorldProcessor` or a `TheWorldConfig` (anything with their `world_*` fields)."""
        names = ("world_image_size", "world_num_frames", "world_temporal_compression")
        return cls(**{name: int(getattr(processor, name)) for name in names}, dtype=dtype)

    from_model_config = from_processor

    @property
    def torch_dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.dtype]

    def world_pixels(self, visual: Any) -> np.ndarray:
        """The world pixels of a visual with these settings: what the processor gives the VAE (no tokenizer needed)."""
        return world_pixels(visual, self.world_image_size, self.world_num_frames, self.world_temporal_compression)

    def key(self, pixels: np.ndarray) -> str:
        """The cache key of world pixels (3, T, S, S): sha256 of the preprocessing tag, shape and float32 bytes."""
        array = np.ascontiguousarray(pixels, dtype=np.float32)
        tag = f"{PREPROCESS_VERSION}|size={self.world_image_size}|tc={self.world_temporal_compression}"
        digest = hashlib.sha256(f"{tag}|{array.shape}|".encode())
        digest.update(array)
        return digest.hexdigest()


@dataclass(frozen=True)
class EncoderFingerprint:
    """What decides an encoder's latents; `files` (the VAE files' stat, not compared) lets a later run trust it unread."""

    config_sha256: str
    weights_sha256: str
    weights_dtype: str
    latents_mean: tuple[float, ...]
    latents_std: tuple[float, ...]
    source: str = ""
    files: dict[str, list] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderFingerprint:
        data = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        data["latents_mean"] = tuple(float(x) for x in data.get("latents_mean", ()))
        data["latents_std"] = tuple(float(x) for x in data.get("latents_std", ()))
        return cls(**data)

    def differences(self, current: EncoderFingerprint) -> list[str]:
        """Why latents of this encoder are not those of `current` (empty when they are)."""
        sources = f" ({self.source or '?'} vs {current.source or '?'})" if self.source != current.source else ""
        problems = []
        if self.config_sha256 != current.config_sha256:
            problems.append(f"world encoder (VAE) config: cache {self.config_sha256[:12]}, now {current.config_sha256[:12]}{sources}")
        if self.weights_sha256 != current.weights_sha256:
            problems.append(
                f"world encoder (VAE) weights: cache sha256 {self.weights_sha256[:12]} ({self.weights_dtype}), now "
                f"{current.weights_sha256[:12]} ({current.weights_dtype}){sources}"
            )
        for name in ("latents_mean", "latents_std"):
            old, new = getattr(self, name), getattr(current, name)
            if len(old) != len(new) or any(abs(a - b) > 1e-7 * max(1.0, abs(a)) for a, b in zip(old, new)):
                problems.append(f"{name}: cache {list(old)[:3]}..., now {list(new)[:3]}...")
        return problems


def tensor_sha256(tensor: torch.Tensor, digest: Any = None) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes: what a shard records and `latents_for` checks."""
    tensor = tensor.detach().to("cpu").contiguous()
    digest = digest or hashlib.sha256()
    digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def fingerprint_encoder(encoder: CosmosWorldEncoder, source: str = "") -> EncoderFingerprint:
    """Hash a loaded encoder's VAE config and encoder tensors as held (a bf16 encoder's latents differ too)."""
    config = {k: v for k, v in dict(encoder.vae.config).items() if not k.startswith("_")}
    digest, dtypes = hashlib.sha256(), set()
    for name, tensor in sorted(encoder.vae.state_dict().items()):
        if name.startswith(ENCODER_PREFIXES):
            dtypes.add(str(tensor.dtype).removeprefix("torch."))
            digest.update(f"{name}|".encode())
            tensor_sha256(tensor, digest)
    return EncoderFingerprint(
        hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest(),
        digest.hexdigest(),
        ",".join(sorted(dtypes)),
        tuple(float(x) for x in encoder.vae.config.latents_mean),
        tuple(float(x) for x in encoder.vae.config.latents_std),
        source=str(source),
        files=encoder_file_stats(source) if source else {},
    )


def fingerprint_pretrained(name_or_path: str | os.PathLike, dtype: torch.dtype | None = None) -> EncoderFingerprint:
    """The fingerprint of the encoder `CosmosWorldEncoder.from_pretrained(name_or_path, dtype)` loads."""
    return fingerprint_encoder(CosmosWorldEncoder.from_pretrained(name_or_path, dtype=dtype), source=str(name_or_path))


def encoder_file_stats(source: str | os.PathLike) -> dict[str, list]:
    """(absolute path, size, mtime_ns) of the config and weight files a VAE source is read from."""
    try:
        files = vae_files(str(source))
    except (OSError, ValueError, TheWorldUserError):  # e.g. a hub id not in the local cache
        return {}
    return {role: [os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for role, p in files.items()}


# ------------------------------------------------------------------------------------------------
# visuals and aliases


def as_world_visual(visual: Any) -> Any:
    """A sample's visual in the processor's form: a clip (a list of frames) as `Clip`, a Path as str."""
    if isinstance(visual, (list, tuple)):
        return Clip(str(f) if isinstance(f, Path) else f for f in visual)
    return str(visual) if isinstance(visual, Path) else visual


def file_alias(visual: Any) -> str | None:
    """(absolute path, size, mtime_ns) of every frame file, or None if any frame is not a local file."""
    parts = []
    for frame in visual if isinstance(visual, Clip) else [visual]:
        if not isinstance(frame, str) or "://" in frame or not os.path.isfile(frame):
            return None
        stat = os.stat(frame)
        parts.append([os.path.abspath(frame), stat.st_size, stat.st_mtime_ns])
    return json.dumps(parts, separators=(",", ":"))


def describe_visual(visual: Any) -> str:
    """A short human description of a visual for error messages."""
    if isinstance(visual, (list, tuple)):
        if not visual:
            return "an empty clip"
        return f"clip of {len(visual)} frames ({describe_visual(visual[0])} ... {describe_visual(visual[-1])})"
    if isinstance(visual, (str, Path)):
        return str(visual)
    size, mode, filename = getattr(visual, "size", None), getattr(visual, "mode", None), getattr(visual, "filename", "")
    if size is not None and mode is not None:
        return f"in-memory {mode} image {size[0]}x{size[1]}" + (f" read from {filename}" if filename else "")
    return f"{type(visual).__name__} object"


def iter_visuals(samples: Iterable[Any]) -> Iterator[Any]:
    """Every visual of the samples: a `Sample`'s `visuals()`, or an item taken as one visual."""
    for sample in samples:
        yield from sample.visuals() if hasattr(sample, "visuals") else [sample]


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
    other_processes: int = 0  # visuals left to the other processes of a shared build

    def summary(self) -> str:
        return (
            f"{self.visuals} visuals, {self.unique} unique: {self.encoded} encoded, {self.already_cached} already "
            f"cached, {self.duplicates} repeats; {self.shards_written} shard(s) written"
        )

    @classmethod
    def total(cls, parts: Iterable[BuildStats | dict[str, Any]]) -> BuildStats:
        """The sum of several processes' stats (each saw its own share of the visuals)."""
        result = cls()
        for part in parts:
            part = part if isinstance(part, dict) else asdict(part)
            for name in ("visuals", "unique", "encoded", "already_cached", "duplicates", "shards_written", "seconds_encoding"):
                setattr(result, name, getattr(result, name) + part[name])
        return result


def share_owner(visual: Any, key: str | None, count: int) -> int:
    """Which of `count` processes building one cache encodes `visual`: a file by its absolute path(s), so
    no process decodes another's files; an in-memory visual by its content key."""
    frames = list(visual) if isinstance(visual, Clip) else [visual]
    files = all(isinstance(f, str) and "://" not in f for f in frames)
    if not files and key is None:
        raise ValueError("an in-memory visual is shared out by its key")
    text = "|".join(os.path.abspath(f) for f in frames) if files else key
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) % count


class LatentCache:
    """Normalised world latents on disk, keyed by visual content. Use `LatentCache.open`."""

    def __init__(self, cache_dir: Path, settings: CacheSettings, fingerprint: EncoderFingerprint) -> None:
        self.cache_dir = cache_dir
        self.settings = settings
        self.fingerprint = fingerprint
        self._preprocessor: Any = settings  # its `world_pixels` makes keys (`build` may be given a processor)
        self._index: dict[str, str] = {}  # key -> shard file name
        self._sha256: dict[str, str] = {}  # key -> recorded checksum of its latents
        self._aliases: dict[str, str] = {}  # file alias -> key (from shards, plus this process's lookups)
        self._stored_aliases: set[str] = set()  # the aliases some shard on disk records
        self._handles: OrderedDict[str, Any] = OrderedDict()  # open shards, most recent last
        self._handles_pid = os.getpid()
        self._scan()

    @classmethod
    def open(
        cls,
        cache_dir: str | os.PathLike,
        encoder_fingerprint: EncoderFingerprint | CosmosWorldEncoder,
        settings: CacheSettings,
        on_stale: str = "error",
    ) -> LatentCache:
        """Open (or create) the cache for this encoder and settings; a disagreeing manifest raises naming every
        difference, or is cleared with `on_stale="rebuild"`."""
        if on_stale not in ON_STALE:
            raise ValueError(f"on_stale={on_stale!r}: expected one of {ON_STALE}")
        if isinstance(encoder_fingerprint, CosmosWorldEncoder):
            encoder_fingerprint = fingerprint_encoder(encoder_fingerprint)
        root = Path(cache_dir)
        if root.exists() and not root.is_dir():
            raise TheWorldUserError(f"latent cache {root} exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        if (root / MANIFEST_NAME).exists():
            problems = _manifest_differences(root / MANIFEST_NAME, encoder_fingerprint, settings)
            what = "was built with other settings; its latents are not valid here:\n  - " + "\n  - ".join(problems)
        else:
            others = [p.name for p in root.iterdir() if not _is_cache_file(p.name)]
            if others:
                raise TheWorldUserError(
                    f"{root} holds files that are not a latent cache (e.g. {others[0]}) and no {MANIFEST_NAME}: "
                    "give latent_cache_dir an empty or new folder"
                )
            problems = ["no manifest"] if any(root.iterdir()) else []
            what = f"has shards but no {MANIFEST_NAME}, so what built them is unknown"
        if problems and on_stale == "error":
            raise TheWorldUserError(
                f"latent cache {root} {what}\nRebuild it (on_stale='rebuild', CLI: theworld cache-latents ... --rebuild) "
                "or point latent_cache_dir at another folder."
            )
        if problems or not (root / MANIFEST_NAME).exists():
            if problems:
                logger.warning("latent cache %s is stale (%s): clearing it", root, "; ".join(problems))
            for path in root.iterdir():  # the cache's own files only, never anything else
                if _is_cache_file(path.name) and path.is_file():
                    path.unlink()
            manifest = {
                "format": CACHE_FORMAT,
                "version": CACHE_VERSION,
                "key_scheme": KEY_SCHEME,
                "preprocess": PREPROCESS_VERSION,
                "encoder": asdict(encoder_fingerprint),
                "settings": asdict(settings),
                "pillow_version": PIL.__version__,  # informational: resizing is PIL's bicubic
            }
            _write_atomic(root / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return cls(root, settings, encoder_fingerprint)

    def _scan(self) -> None:
        """Index every complete shard: tensor names are keys, metadata holds aliases and checksums."""
        for path in sorted(self.cache_dir.iterdir()):
            if not SHARD_PATTERN.match(path.name):
                continue
            try:
                with safe_open(str(path), framework="pt") as handle:
                    keys, metadata = list(handle.keys()), handle.metadata() or {}
                checksums = json.loads(metadata[CHECKSUMS_METADATA])
            except Exception as err:  # a damaged header, a truncated file (safetensors' own errors), no checksums
                raise LatentCacheCorruptError(
                    f"latent cache shard {path} is unreadable or has no checksums ({type(err).__name__}: {err}); "
                    f"delete it and run `theworld cache-latents` again (only its latents are re-encoded)"
                ) from err
            if any(k not in checksums for k in keys):
                raise LatentCacheCorruptError(
                    f"latent cache shard {path} records no checksum for some latents; delete it and run "
                    "`theworld cache-latents` again"
                )
            self._index.update(dict.fromkeys(keys, path.name))
            self._sha256.update({k: checksums[k] for k in keys})
            aliases = json.loads(metadata.get(ALIASES_METADATA, "{}"))
            self._aliases.update(aliases)
            self._stored_aliases.update(aliases)

    # -------------------------------------------------------------------------------------------
    # reading

    def __len__(self) -> int:
        return len(self._index)

    def key_for(self, visual: Any) -> str:
        """The cache key of a visual; an unchanged, already-seen file needs no decoding."""
        visual = as_world_visual(visual)
        alias = file_alias(visual)
        if alias is not None and alias in self._aliases:
            return self._aliases[alias]
        key = self.settings.key(self._world_pixels(visual))
        if alias is not None:
            self._aliases[alias] = key  # memo for this process: the next epoch skips the decode
        return key

    def _world_pixels(self, visual: Any) -> np.ndarray:
        try:
            return self._preprocessor.world_pixels(visual)
        except (OSError, ValueError, TypeError) as err:
            raise TheWorldUserError(f"cannot prepare {describe_visual(visual)} for the world encoder: {err}") from err

    def latents_for(self, visual: Any) -> torch.Tensor:
        """Normalised latents (16, Tl, h, w) of an image or clip, in the storage dtype, checksum verified."""
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
        """An open shard; at most MAX_OPEN_SHARDS stay open (a big cache has more shards than file descriptors)."""
        if self._handles_pid != os.getpid():
            self._handles, self._handles_pid = OrderedDict(), os.getpid()
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.cache_dir / shard), framework="pt")
            while len(self._handles) > MAX_OPEN_SHARDS:
                self._handles.popitem(last=False)
        self._handles.move_to_end(shard)
        return self._handles[shard]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": OrderedDict()}  # safetensors handles do not pickle (spawned workers)

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
        total: int | None = None,
        share: tuple[int, int] = (0, 1),
    ) -> BuildStats:
        """Encode every uncached visual of `samples`, a shard every `shard_size` latents, so a stopped build
        loses at most one shard. `share=(index, count)`: encode only what `share_owner` gives process `index`."""
        if batch_size < 1 or shard_size < 1:
            raise ValueError(f"batch_size={batch_size} and shard_size={shard_size} must be positive")
        index, count = share
        if not 0 <= index < count:
            raise ValueError(f"share={share}: expected (index, count) with 0 <= index < count")
        problems = self.fingerprint.differences(fingerprint_encoder(encoder))
        if problems:
            raise TheWorldUserError(
                f"the encoder given to build() is not the one latent cache {self.cache_dir} is for: " + "; ".join(problems)
            )
        if processor_like is not None:
            for name in ("world_image_size", "world_temporal_compression"):  # others would compute other keys
                value, ours = getattr(processor_like, name, None), getattr(self.settings, name)
                if value is not None and int(value) != ours:
                    raise TheWorldUserError(f"the processor has {name}={value} but the latent cache settings say {ours}")
            self._preprocessor = processor_like
        _remove_orphaned_temporary_files(self.cache_dir)
        stats, seen = BuildStats(), set()
        batches: dict[tuple[int, ...], list[tuple[str, np.ndarray, Any]]] = {}  # by pixel shape
        pending: dict[str, Any] = {"latents": {}, "aliases": {}}  # encoded / learnt, not yet in a shard
        with tqdm(samples, total=total, desc="caching world latents", unit="sample", disable=not progress) as bar:
            for visual in map(as_world_visual, iter_visuals(bar)):
                alias = file_alias(visual)
                if count > 1 and alias is not None and share_owner(visual, None, count) != index:
                    stats.other_processes += 1  # another process's file: not even decoded here
                    continue
                key, pixels = self._aliases.get(alias) if alias is not None else None, None
                if key is None:
                    pixels = self._world_pixels(visual)
                    key = self.settings.key(pixels)
                    if count > 1 and alias is None and share_owner(visual, key, count) != index:
                        stats.other_processes += 1
                        continue
                    if alias is not None:
                        self._aliases[alias] = key
                stats.visuals += 1
                if alias is not None and alias not in self._stored_aliases:
                    pending["aliases"][alias] = key
                if key in seen:
                    stats.duplicates += 1
                    continue
                seen.add(key)
                stats.unique += 1
                if key in self._index:
                    stats.already_cached += 1
                    continue
                pixels = pixels if pixels is not None else self._world_pixels(visual)  # known alias, not written yet
                batch = batches.setdefault(pixels.shape, [])
                batch.append((key, pixels, visual))
                if len(batch) >= batch_size:
                    self._encode(encoder, batches.pop(pixels.shape), pending["latents"], stats)
                    bar.set_postfix(encoded=stats.encoded)
                if len(pending["latents"]) >= shard_size:
                    self._flush(pending, stats)
            for shape in list(batches):
                self._encode(encoder, batches.pop(shape), pending["latents"], stats)
            if pending["latents"] or pending["aliases"]:
                self._flush(pending, stats)
        logger.info("latent cache %s: %s", self.cache_dir, stats.summary())
        return stats

    def _encode(self, encoder: CosmosWorldEncoder, batch: list, pending: dict[str, torch.Tensor], stats: BuildStats) -> None:
        start = time.perf_counter()
        with torch.no_grad():
            latents = encoder(torch.from_numpy(np.stack([p for _, p, _ in batch]))).to("cpu", self.settings.torch_dtype)
        for index, (key, _, visual) in enumerate(batch):
            if not bool(torch.isfinite(latents[index]).all()):
                raise TheWorldUserError(
                    f"the world encoder gave non-finite latents for {describe_visual(visual)}; they are not cached "
                    "(training on them would give a NaN model). Check that file, and the encoder's dtype "
                    "(--encoder-dtype float32)"
                )
            pending[key] = latents[index].clone()  # own storage: safetensors refuses shared tensors
        stats.encoded += len(batch)
        stats.seconds_encoding += time.perf_counter() - start

    def _flush(self, pending: dict[str, Any], stats: BuildStats) -> None:
        """Write pending latents (and aliases) as one new shard: temporary file, then rename."""
        numbers = [int(m.group(1)) for p in self.cache_dir.iterdir() if (m := SHARD_PATTERN.match(p.name))]
        name = f"latents-{max(numbers, default=-1) + 1:05d}-{secrets.token_hex(4)}.safetensors"
        tmp = self.cache_dir / _tmp_name(name)
        checksums = {key: tensor_sha256(tensor) for key, tensor in pending["latents"].items()}
        metadata = {
            "format": "pt",
            ALIASES_METADATA: json.dumps(pending["aliases"], separators=(",", ":")),
            CHECKSUMS_METADATA: json.dumps(checksums, separators=(",", ":")),
        }
        save_file(pending["latents"], str(tmp), metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.cache_dir / name)
        self._index.update(dict.fromkeys(checksums, name))
        self._sha256.update(checksums)
        self._stored_aliases.update(pending["aliases"])
        stats.shards_written += 1
        logger.debug("latent cache: wrote %s (%d latents)", name, len(checksums))
        pending["latents"], pending["aliases"] = {}, {}


# ------------------------------------------------------------------------------------------------
# the cache a training run reads


def open_cache(cache_dir: str | os.PathLike, world_config: Any, encoder_source: str, on_stale: str = "error") -> LatentCache:
    """The cache in `cache_dir`, checked against a run's `TheWorldConfig` and VAE (read only if its files changed)."""
    manifest_path = Path(cache_dir) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise TheWorldUserError(
            f"latent_cache_dir: {cache_dir} holds no latent cache; build it first with "
            "`theworld cache-latents --config <this training config>`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        recorded, storage_dtype = EncoderFingerprint.from_dict(manifest["encoder"]), manifest["settings"]["dtype"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded, storage_dtype = None, "float32"
    if recorded is not None and recorded.files and recorded.files == encoder_file_stats(encoder_source):
        fingerprint = recorded
    else:  # hash the VAE as the cache builder held it (its dtype is recorded), so the weights compare
        dtype = STORAGE_DTYPES.get(recorded.weights_dtype) if recorded is not None else None
        fingerprint = fingerprint_pretrained(encoder_source, dtype=dtype)
    settings = CacheSettings.from_model_config(world_config, dtype=storage_dtype if storage_dtype in STORAGE_DTYPES else "float32")
    cache = LatentCache.open(cache_dir, fingerprint, settings, on_stale=on_stale)
    if len(cache) == 0:
        raise TheWorldUserError(f"latent cache {cache_dir} is empty: run `theworld cache-latents --config <this training config>`")
    return cache


def open_for_training(train_config: Any, on_stale: str = "error") -> LatentCache:
    """The latent cache a `TrainConfig` names (`latent_cache_dir`), for its model's world settings and VAE."""
    if not train_config.latent_cache_dir:
        raise TheWorldUserError("latent_cache_dir is not set")
    world = resolve_model(train_config).config
    return open_cache(train_config.latent_cache_dir, world, encoder_source(train_config), on_stale=on_stale)


# ------------------------------------------------------------------------------------------------
# manifest and files


def _manifest_differences(path: Path, fingerprint: EncoderFingerprint, settings: CacheSettings) -> list[str]:
    """Every reason the cache's latents are invalid for this encoder and these settings."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        cached_fp, cached_settings = EncoderFingerprint.from_dict(manifest["encoder"]), manifest["settings"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{path} is unreadable ({err})"]
    problems = []
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        problems.append(f"cache format {manifest.get('format')} v{manifest.get('version')}, now {CACHE_FORMAT} v{CACHE_VERSION}")
    if manifest.get("preprocess") != PREPROCESS_VERSION:
        problems.append(f"preprocessing {manifest.get('preprocess')}, now {PREPROCESS_VERSION}")
    problems += cached_fp.differences(fingerprint)
    for name in ("world_image_size", "world_temporal_compression", "dtype"):
        if cached_settings.get(name) != getattr(settings, name):
            problems.append(f"{name}: cache {cached_settings.get(name)}, now {getattr(settings, name)}")
    return problems


def _is_cache_file(name: str) -> bool:
    return name == MANIFEST_NAME or bool(SHARD_PATTERN.match(name)) or (name.startswith(".") and name.endswith(".tmp"))


def _tmp_name(name: str) -> str:
    """The temporary name a file is written under before its rename: it names the writer (host, pid)."""
    return f".{name}.{this_host()}.{os.getpid()}.tmp"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(_tmp_name(path.name))
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _remove_orphaned_temporary_files(root: Path, max_age_s: float = TMP_MAX_AGE_S) -> list[str]:
    """Delete temporary files whose writer is gone, or older than `max_age_s` (another host's cannot be checked)."""
    removed, now = [], time.time()
    for path in root.iterdir():
        match = TMP_PATTERN.match(path.name)
        ours = path.name.startswith((".latents-", f".{MANIFEST_NAME}.")) and path.name.endswith(".tmp")
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
