"""The latent cache: exact latents, one encode per content, stale caches refused, resumable builds,
and a model fed cached latents computing exactly what it computes from pixels."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.processing.processor import Clip, TheWorldProcessor
from theworld.testing.tiny import TinyVAESpec, make_tiny_vae
from theworld.training.latent_cache import (
    CacheSettings,
    LatentCache,
    LatentCacheMissError,
    fingerprint_encoder,
    fingerprint_pretrained,
)
from theworld.world_encoder.vae import CosmosWorldEncoder


class CountingEncoder(torch.nn.Module):
    """Wraps an encoder, counts the visuals it encodes, and can fail after some batches."""

    def __init__(self, encoder: CosmosWorldEncoder, fail_after_batches: int | None = None) -> None:
        super().__init__()
        self.inner = encoder
        self.vae = encoder.vae  # fingerprinting reads `.vae`
        self.items = 0
        self.batches = 0
        self.fail_after_batches = fail_after_batches

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
            raise RuntimeError("simulated crash mid-build")
        self.batches += 1
        self.items += pixels.shape[0]
        return self.inner(pixels)


def _image(path, seed: int, size: int = 48) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def encoder(tiny_vae_dir):
    return CosmosWorldEncoder.from_pretrained(tiny_vae_dir)


@pytest.fixture(scope="module")
def processor(tiny_gemma_dir, world_settings):
    return TheWorldProcessor.from_pretrained(tiny_gemma_dir, **world_settings)


@pytest.fixture(scope="module")
def settings(world_settings):
    return CacheSettings(world_image_size=world_settings["world_image_size"], world_num_frames=world_settings["world_num_frames"])


@pytest.fixture(scope="module")
def other_vae_dir(tmp_path_factory):
    return str(make_tiny_vae(tmp_path_factory.mktemp("other_vae"), TinyVAESpec(seed=1)))


@pytest.fixture
def data(tmp_path):
    """Two image files, an in-memory image, and a 5-frame clip on disk, as samples."""
    a = _image(tmp_path / "a.png", 0)
    b = _image(tmp_path / "b.jpg", 1, size=80)
    memory = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    clip = [_image(tmp_path / f"clip_{i}.png", 10 + i) for i in range(5)]

    def sample(sid, *items):
        content = [{"type": "text", "text": "what is there?"}]
        for item in items:
            content.append({"type": "video", "video": item} if isinstance(item, list) else {"type": "image", "image": item})
        return Sample(id=sid, messages=[{"role": "user", "content": content}])

    samples = [sample("s0", a), sample("s1", b, memory), sample("s2", clip), sample("s3", a)]
    return {"samples": samples, "visuals": [a, b, memory, clip]}


def _direct(encoder, processor, visual):
    visual = Clip(visual) if isinstance(visual, list) else visual
    with torch.no_grad():
        return encoder(torch.from_numpy(processor.world_pixels(visual))[None])[0]


def test_cached_latents_equal_direct_encoding(tmp_path, data, encoder, processor, settings, tiny_vae_dir):
    cache = LatentCache.open(tmp_path / "cache", fingerprint_pretrained(tiny_vae_dir), settings)
    # batch_size=1: the encoder sees exactly what a direct call on one visual gives it.
    stats = cache.build(data["samples"], encoder, processor, batch_size=1, shard_size=2, progress=False)
    assert (stats.visuals, stats.unique, stats.encoded, stats.duplicates) == (5, 4, 4, 1)
    assert len(list((tmp_path / "cache").glob("latents-*.safetensors"))) == stats.shards_written == 2
    for visual in data["visuals"]:
        cached = cache.latents_for(visual)
        expected = _direct(encoder, processor, visual)
        assert cached.dtype == torch.float32
        assert torch.equal(cached, expected), visual
    assert cache.latents_for(data["visuals"][3]).shape == (16, 2, 8, 8)  # 5 frames -> 2 latent frames

    # A fresh process (new open, default preprocessing, no processor) serves the same latents.
    reopened = LatentCache.open(tmp_path / "cache", fingerprint_encoder(encoder), settings)
    assert len(reopened) == 4
    for visual in data["visuals"]:
        assert torch.equal(reopened.latents_for(visual), cache.latents_for(visual))
    # Batched builds group visuals by frame count; CPU conv kernels differ in the last bit between
    # batch 1 and larger batches (the VAE's own behaviour, not the cache's), so: close, not equal.
    batched = LatentCache.open(tmp_path / "batched", encoder, settings)
    batched.build(data["samples"][:2], encoder, processor, batch_size=3, progress=False)
    for visual in data["visuals"][:3]:
        torch.testing.assert_close(batched.latents_for(visual), cache.latents_for(visual), rtol=1e-5, atol=1e-5)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["settings"]["world_image_size"] == 64
    assert manifest["encoder"]["weights_sha256"] == fingerprint_encoder(encoder).weights_sha256
    assert len(manifest["encoder"]["latents_mean"]) == 16


def test_same_content_under_two_paths_is_encoded_once(tmp_path, data, encoder, settings):
    original = data["visuals"][0]
    copy = shutil.copy(original, tmp_path / "copy_of_a.png")
    in_memory = Image.open(original).convert("RGB")
    counting = CountingEncoder(encoder)
    cache = LatentCache.open(tmp_path / "cache", encoder, settings)
    stats = cache.build([original, copy, in_memory], counting, batch_size=4, progress=False)
    assert counting.items == 1 and stats.encoded == 1 and stats.duplicates == 2
    assert torch.equal(cache.latents_for(copy), cache.latents_for(original))
    assert torch.equal(cache.latents_for(in_memory), cache.latents_for(original))


def test_cache_of_another_vae_is_refused_then_rebuilt(tmp_path, data, encoder, settings, other_vae_dir):
    root = tmp_path / "cache"
    images_only = data["samples"][:2]  # the clip would only add encoding time here
    LatentCache.open(root, encoder, settings).build(images_only, encoder, progress=False)
    other = CosmosWorldEncoder.from_pretrained(other_vae_dir)
    with pytest.raises(TheWorldUserError, match="world encoder \\(VAE\\) weights") as info:
        LatentCache.open(root, fingerprint_pretrained(other_vae_dir), settings)
    assert "rebuild" in str(info.value)
    assert len(list(root.glob("latents-*"))) > 0  # refusing deletes nothing

    rebuilt = LatentCache.open(root, fingerprint_encoder(other), settings, on_stale="rebuild")
    assert len(rebuilt) == 0 and not list(root.glob("latents-*"))
    rebuilt.build(images_only, other, batch_size=1, progress=False)
    image = data["visuals"][1]
    assert torch.equal(rebuilt.latents_for(image), _direct(other, rebuilt._preprocessor, image))
    assert not torch.equal(rebuilt.latents_for(image), _direct(encoder, rebuilt._preprocessor, image))
    # Building with an encoder other than the one the cache was opened for is refused too.
    with pytest.raises(TheWorldUserError, match="not the one"):
        rebuilt.build(images_only, encoder, progress=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(world_image_size=32), "world_image_size: cache 64, now 32"),
        (dict(dtype="bfloat16"), "dtype: cache float32, now bfloat16"),
    ],
)
def test_cache_with_other_settings_is_refused_then_rebuilt(tmp_path, data, encoder, settings, change, message):
    root = tmp_path / "cache"
    LatentCache.open(root, encoder, settings).build(data["samples"][:1], encoder, progress=False)
    changed = CacheSettings(**{**settings.__dict__, **change})
    with pytest.raises(TheWorldUserError, match=message):
        LatentCache.open(root, encoder, changed)
    cache = LatentCache.open(root, encoder, changed, on_stale="rebuild")
    assert len(cache) == 0
    cache.build(data["samples"][:1], encoder, progress=False)
    latents = cache.latents_for(data["visuals"][0])
    assert latents.dtype == changed.torch_dtype
    assert latents.shape[-1] == changed.world_image_size // 8


def test_partial_build_resumes(tmp_path, data, encoder, settings):
    root = tmp_path / "cache"
    crashing = CountingEncoder(encoder, fail_after_batches=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cache = LatentCache.open(root, encoder, settings)
        cache.build(data["samples"], crashing, batch_size=1, shard_size=1, progress=False)
    assert not list(root.glob(".*.tmp"))
    resumed = LatentCache.open(root, encoder, settings)
    assert len(resumed) == 2  # both finished shards survive
    counting = CountingEncoder(encoder)
    stats = resumed.build(data["samples"], counting, batch_size=1, shard_size=1, progress=False)
    assert counting.items == 2 and stats.already_cached == 2 and stats.encoded == 2
    for visual in data["visuals"]:
        assert torch.equal(resumed.latents_for(visual), _direct(encoder, resumed._preprocessor, visual))
    again = CountingEncoder(encoder)
    assert resumed.build(data["samples"], again, progress=False).encoded == 0 and again.items == 0


def test_many_shards_few_open_files_and_pickling(tmp_path, data, encoder, settings, monkeypatch):
    import pickle

    import theworld.training.latent_cache as latent_cache

    monkeypatch.setattr(latent_cache, "MAX_OPEN_SHARDS", 2)
    cache = LatentCache.open(tmp_path / "cache", encoder, settings)
    cache.build(data["samples"], encoder, batch_size=1, shard_size=1, progress=False)
    assert len(list((tmp_path / "cache").glob("latents-*"))) == 4
    expected = [cache.latents_for(v) for v in data["visuals"]]
    for _ in range(2):
        for visual, latents in zip(data["visuals"], expected):
            assert torch.equal(cache.latents_for(visual), latents)
            assert len(cache._handles) <= 2
    # A spawned dataloader worker receives the cache pickled: it reopens shards itself.
    clone = pickle.loads(pickle.dumps(cache))
    assert all(torch.equal(clone.latents_for(v), x) for v, x in zip(data["visuals"], expected))


def test_missing_visual_names_it_and_changed_files_miss(tmp_path, data, encoder, settings):
    cache = LatentCache.open(tmp_path / "cache", encoder, settings)
    cache.build(data["samples"][:1], encoder, progress=False)
    stranger = _image(tmp_path / "never_cached.png", 99)
    with pytest.raises(LatentCacheMissError, match="never_cached.png") as info:
        cache.latents_for(stranger)
    assert "theworld cache-latents" in str(info.value)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(TheWorldUserError, match="cannot prepare .*broken.png"):
        cache.latents_for(str(broken))
    with pytest.raises(LatentCacheMissError, match="1 visual"):
        cache.check_complete(data["samples"][:1] + [stranger])

    # A reopened cache resolves unchanged files from the recorded aliases, without decoding.
    class NoDecode:
        def world_pixels(self, visual):
            raise AssertionError(f"decoded {visual}")

    reopened = LatentCache.open(tmp_path / "cache", encoder, settings)
    reopened._preprocessor = NoDecode()
    assert reopened.latents_for(data["visuals"][0]).shape == (16, 1, 8, 8)
    # Rewritten content (new size/mtime) is hashed again and is a clear miss, never a stale hit.
    _image(data["visuals"][0], 123, size=50)
    fresh = LatentCache.open(tmp_path / "cache", encoder, settings)
    with pytest.raises(LatentCacheMissError, match="a.png"):
        fresh.latents_for(data["visuals"][0])


def test_folder_that_is_not_a_cache_is_never_cleared(tmp_path, encoder, settings):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TheWorldUserError, match="not a latent cache"):
        LatentCache.open(tmp_path, encoder, settings, on_stale="rebuild")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_fingerprint_same_for_encoder_half_and_full_vae(tiny_vae_dir, encoder):
    from diffusers import AutoencoderKLWan

    full = CosmosWorldEncoder(AutoencoderKLWan.from_pretrained(os.path.join(tiny_vae_dir, "vae")))
    a, b = fingerprint_encoder(full), fingerprint_pretrained(tiny_vae_dir)
    assert (a.config_sha256, a.weights_sha256) == (b.config_sha256, b.weights_sha256)
    assert fingerprint_pretrained(tiny_vae_dir, dtype=torch.bfloat16).weights_sha256 != b.weights_sha256


def test_model_forward_with_cached_latents_is_bit_identical(tmp_path, tiny_gemma_dir, tiny_vae_dir, world_settings):
    from theworld.model.modeling import TheWorld

    torch.manual_seed(0)
    model = TheWorld.from_pretrained(
        tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, dtype=torch.float32, attn_implementation="eager", **world_settings
    ).eval()
    processor = TheWorldProcessor.from_model_config(tiny_gemma_dir, model.config)
    images = [_image(tmp_path / "x.png", 5), _image(tmp_path / "y.png", 6, size=70)]
    conversation = [
        {
            "role": "user",
            "content": [{"type": "image", "image": images[0]}, {"type": "image", "image": images[1]}, {"type": "text", "text": "which is left?"}],
        }
    ]
    batch = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
    settings = CacheSettings.from_processor(processor)
    cache = LatentCache.open(tmp_path / "cache", fingerprint_pretrained(tiny_vae_dir), settings)
    sample = Sample(id="x", messages=conversation)
    # Both images in one encoder batch, as the model encodes world_pixel_values (batch size picks
    # the CPU conv kernel, see test_cached_latents_equal_direct_encoding).
    cache.build([sample], model.world_encoder, processor, batch_size=2, progress=False)
    world_latents = torch.stack([cache.latents_for(v) for v in sample.visuals()])
    with torch.no_grad():
        assert torch.equal(world_latents, model.world_encoder(batch["world_pixel_values"]))

    inputs = {k: v for k, v in batch.items() if k != "world_pixel_values"}
    with torch.no_grad():
        from_pixels = model(**inputs, world_pixel_values=batch["world_pixel_values"]).logits
        from_cache = model(**inputs, world_latents=world_latents).logits
    assert from_pixels.shape[1] == inputs["input_ids"].shape[1]
    assert torch.equal(from_pixels, from_cache)


def test_cli_caches_a_training_config_and_the_trainer_opens_it(tmp_path, tiny_gemma_dir, tiny_vae_dir, capsys):
    from theworld.cli.main import main
    from theworld.data.loading import load_samples
    from theworld.training.config import load_config
    from theworld.training.latent_cache import open_for_training

    _image(tmp_path / "p.png", 1)
    _image(tmp_path / "q.png", 2)
    shutil.copy(tmp_path / "p.png", tmp_path / "p_copy.png")
    records = [
        {"id": "a", "question": "Is it red?", "answer": "yes", "image": "p.png"},
        {"id": "b", "question": "Is it blue?", "answer": "no", "image": "q.png"},
        {"id": "c", "question": "Is it red?", "answer": "yes", "image": "p_copy.png"},
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_gemma_dir}\ncosmos_model_name: {tiny_vae_dir}\n"
        f"train_data: {tmp_path / 'train.jsonl'}\noutput_dir: {tmp_path / 'out'}\n"
        f"latent_cache_dir: {tmp_path / 'cache'}\nworld_tokens_per_frame: 16\nworld_num_frames: 9\n"
    )
    # world_image_size comes from the command line, as an override of the training config.
    assert main(["cache-latents", "--config", str(config), "--world_image_size", "64", "--no-progress"]) == 0
    assert "3 visuals, 2 unique: 2 encoded" in capsys.readouterr().out

    train_config = load_config(config, {"world_image_size": "64"})
    cache = open_for_training(train_config)
    samples = load_samples(train_config.train_data)
    cache.check_complete(samples)
    assert cache.latents_for(samples[0].visuals()[0]).shape == (16, 1, 8, 8)

    # Another size: refused with the difference named (exit 2), then rebuilt on request.
    assert main(["cache-latents", "--config", str(config), "--world-image-size", "32", "--world_tokens_per_frame", "4"]) == 2
    assert "world_image_size: cache 64, now 32" in capsys.readouterr().err
    with pytest.raises(TheWorldUserError, match="world_image_size: cache 64, now 32"):
        open_for_training(load_config(config, {"world_image_size": "32", "world_tokens_per_frame": "4"}))
    args = ["cache-latents", "--config", str(config), "--world_image_size", "32", "--world_tokens_per_frame", "4"]
    assert main(args + ["--rebuild", "--no-progress"]) == 0
    assert "2 encoded" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# faults: damaged shards, non-finite latents, a killed build's temporary files


def _flip_first_latent_byte(shard) -> None:
    """Flip bit 30 (the top exponent bit) of the first float32 of the shard's first tensor."""
    import struct

    with open(shard, "r+b") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
        first = min((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][0])
        offset = 8 + header_len + first["data_offsets"][0] + 3
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


def test_flipped_bit_in_a_shard_is_refused_on_read_naming_shard_and_visual(tmp_path, data, encoder, settings):
    from theworld.training.latent_cache import SHARD_PATTERN, LatentCacheCorruptError

    root = tmp_path / "cache"
    a = data["visuals"][0]
    LatentCache.open(root, encoder, settings).build([a], encoder, progress=False)
    (shard,) = [p for p in root.iterdir() if SHARD_PATTERN.match(p.name)]
    before = LatentCache.open(root, encoder, settings).latents_for(a).clone()  # (the tensor maps the file)
    _flip_first_latent_byte(shard)
    cache = LatentCache.open(root, encoder, settings)  # the header is intact: it opens
    with pytest.raises(LatentCacheCorruptError, match=rf"shard {shard} is damaged: the latents of {a} .*do not match"):
        cache.latents_for(a)
    # what it would have served: one value scaled by 2**128 (or inf/nan), the rest equal
    from safetensors.torch import load_file

    served = next(iter(load_file(str(shard)).values()))
    assert not torch.equal(served, before) and int((served != before).sum()) == 1
    # the fix the message gives: delete the shard, build again
    shard.unlink()
    LatentCache.open(root, encoder, settings).build([a], encoder, progress=False)
    assert torch.equal(LatentCache.open(root, encoder, settings).latents_for(a), before)


def test_truncated_shard_or_one_without_checksums_is_refused_on_open(tmp_path, data, encoder, settings):
    from safetensors.torch import save_file

    from theworld.training.latent_cache import SHARD_PATTERN, LatentCacheCorruptError

    root = tmp_path / "cache"
    LatentCache.open(root, encoder, settings).build([data["visuals"][0]], encoder, progress=False)
    (shard,) = [p for p in root.iterdir() if SHARD_PATTERN.match(p.name)]
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size - 10)
    with pytest.raises(LatentCacheCorruptError, match=rf"shard {shard} is unreadable"):
        LatentCache.open(root, encoder, settings)
    save_file({"k": torch.zeros(2)}, str(shard), metadata={"format": "pt"})  # no checksums
    with pytest.raises(LatentCacheCorruptError, match="has no checksums"):
        LatentCache.open(root, encoder, settings)


def test_non_finite_latents_are_never_cached(tmp_path, data, encoder, settings):
    class NaNEncoder(CountingEncoder):
        def forward(self, pixels):
            out = super().forward(pixels)
            out[0].view(-1)[0] = float("nan")
            return out

    cache = LatentCache.open(tmp_path / "cache", encoder, settings)
    a = data["visuals"][0]
    with pytest.raises(TheWorldUserError, match=rf"non-finite latents for {a}; they are not cached"):
        cache.build([a], NaNEncoder(encoder), progress=False)
    assert len(LatentCache.open(tmp_path / "cache", encoder, settings)) == 0


_HANGING_WRITER = """
import sys, time
from theworld.training import latent_cache

real_save = latent_cache.save_file


def save_then_hang(tensors, path, metadata=None):
    real_save(tensors, path, metadata=metadata)
    print(path, flush=True)
    time.sleep(600)  # the shard is written under its temporary name, not yet renamed


latent_cache.save_file = save_then_hang
from theworld.cli.main import main

main(["cache-latents", "--config", sys.argv[1], "--no-progress"])
"""


def test_killed_builds_temporary_shard_is_removed_by_the_next_build_a_live_writers_is_not(
    tmp_path, tiny_gemma_dir, tiny_vae_dir, capsys
):
    import signal
    import subprocess
    import sys

    from theworld.cli.main import main

    _image(tmp_path / "p.png", 1)
    _image(tmp_path / "q.png", 2)
    records = [{"id": "a", "question": "red?", "answer": "yes", "image": "p.png"}, {"id": "b", "question": "red?", "answer": "no", "image": "q.png"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_gemma_dir}\ncosmos_model_name: {tiny_vae_dir}\ntrain_data: {tmp_path / 'train.jsonl'}\n"
        f"output_dir: {tmp_path / 'out'}\nlatent_cache_dir: {tmp_path / 'cache'}\n"
        "world_image_size: 64\nworld_tokens_per_frame: 16\nworld_num_frames: 9\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    writer = subprocess.Popen(
        [sys.executable, "-c", _HANGING_WRITER, str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        tmp = writer.stdout.readline().strip()  # "" if the writer died first
        assert tmp.endswith(".tmp") and os.path.exists(tmp), writer.stderr.read() if not tmp else tmp
        # a build running at the same time leaves the live writer's temporary shard alone
        assert main(["cache-latents", "--config", str(config), "--no-progress"]) == 0
        assert os.path.exists(tmp)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert os.path.exists(tmp)  # orphaned: its writer was killed before the rename
    capsys.readouterr()
    assert main(["cache-latents", "--config", str(config), "--no-progress"]) == 0
    assert not os.path.exists(tmp)
    assert not [p for p in os.listdir(tmp_path / "cache") if p.endswith(".tmp")]
    assert "2 already cached" in capsys.readouterr().out


def test_training_trusts_the_recorded_vae_while_its_files_are_unchanged(tmp_path, tiny_vae_dir, tiny_gemma_dir, data, world_settings, monkeypatch):
    """`open_cache` takes the resolved model config and the VAE source; it reads no VAE weights while the files
    the cache was built from keep their recorded size and mtime, and hashes them again once they change."""
    from theworld.model.checkpoints import resolve
    from theworld.training import latent_cache

    def world_config_for(path, **settings):
        return resolve(path, **settings).config

    vae = tmp_path / "cosmos"
    shutil.copytree(tiny_vae_dir, vae)
    encoder = CosmosWorldEncoder.from_pretrained(vae)
    settings = CacheSettings.from_model_config(world_config_for(tiny_gemma_dir, **world_settings))
    LatentCache.open(tmp_path / "cache", fingerprint_encoder(encoder, source=str(vae)), settings).build(data["samples"][:1], encoder, progress=False)

    hashed = []
    real = latent_cache.fingerprint_pretrained
    monkeypatch.setattr(latent_cache, "fingerprint_pretrained", lambda *a, **k: hashed.append(a) or real(*a, **k))
    world = world_config_for(tiny_gemma_dir, **world_settings)
    cache = latent_cache.open_cache(tmp_path / "cache", world, str(vae))
    assert hashed == [] and cache.latents_for(data["visuals"][0]).shape == (16, 1, 8, 8)
    weights = vae / "vae" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # same bytes, new mtime
    assert len(latent_cache.open_cache(tmp_path / "cache", world, str(vae))) == 1 and len(hashed) == 1
    with pytest.raises(TheWorldUserError, match="world_image_size: cache 64, now 32"):
        latent_cache.open_cache(tmp_path / "cache", world_config_for(tiny_gemma_dir, **{**world_settings, "world_image_size": 32, "world_tokens_per_frame": 4}), str(vae))
