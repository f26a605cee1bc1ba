"""Faults a training run meets, each reproduced as issue 9 measured it and required to stop the run
with an error naming the thing at fault: a rerun into an existing output_dir, checkpoint files
missing, truncated or altered, a damaged or NaN latent in the cache, a NaN gradient."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from theworld.cli.main import main
from theworld.model.modeling import WORLD_ADAPTER_NAME
from theworld.training.checkpoint_io import CheckpointError
from theworld.training.config import build_config
from theworld.training.latent_cache import CHECKSUMS_METADATA, SHARD_PATTERN, tensor_sha256
from theworld.training.nonfinite import NonFiniteError
from theworld.training.run import build_trainer, train
from theworld.training.trainer import TRAINING_INFO_NAME


def _checkpoints(out) -> list[str]:
    return sorted((p for p in os.listdir(out) if p.startswith("checkpoint-")), key=lambda p: int(p.split("-")[1]))


def _train_cli(capsys, config: str, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["train", "--config", config, *args])
    return code, capsys.readouterr().err


@pytest.fixture
def run_values(train_config_values):
    """10 steps of one sample each, a checkpoint every 5, the newest two kept (the issue's setting)."""
    return dict(train_config_values, max_steps=10, save_steps=5, save_total_limit=2, per_device_train_batch_size=1)


# ------------------------------------------------------------------------------------------------
# section 3: a rerun into the same output_dir


def test_rerun_into_an_existing_run_is_refused_overwritten_on_request_never_mixed(run_values, write_config, capsys):
    out = run_values["output_dir"]
    config = write_config(run_values)
    assert _train_cli(capsys, config)[0] == 0
    assert _checkpoints(out) == ["checkpoint-5", "checkpoint-10"]
    before = {name: os.path.getmtime(os.path.join(out, name)) for name in os.listdir(out)}

    # 3 steps into the same folder: refused (it used to train, then rotate its own checkpoint-3 away)
    code, err = _train_cli(capsys, config, "--max_steps", "3")
    assert code == 2
    assert f"output_dir {out} already holds a training run (checkpoint-5, checkpoint-10, a final model)" in err
    assert "--resume_from_checkpoint latest" in err and "--overwrite_output_dir true" in err
    after = {name: os.path.getmtime(os.path.join(out, name)) for name in os.listdir(out) if name in before}
    assert after == before and _checkpoints(out) == ["checkpoint-5", "checkpoint-10"]

    # --overwrite_output_dir: the old run is gone, the new one alone remains, and `latest` resumes it
    assert _train_cli(capsys, config, "--max_steps", "3", "--overwrite_output_dir", "true")[0] == 0
    assert _checkpoints(out) == ["checkpoint-3"]
    assert json.load(open(os.path.join(out, TRAINING_INFO_NAME)))["global_step"] == 3
    result = train(build_config(dict(run_values, max_steps=4, save_steps=4, resume_from_checkpoint="latest")))
    assert result.global_step == 4
    # it continued the new run: its history is checkpoint-3's (steps 1..3) plus step 4
    history = json.load(open(os.path.join(out, "checkpoint-3", "trainer_state.json")))["log_history"]
    steps = [e["step"] for e in result.trainer.state.log_history if "loss" in e]
    assert steps == [1, 2, 3, 4] and result.trainer.state.log_history[:3] == history[:3]
    assert _checkpoints(out) == ["checkpoint-3", "checkpoint-4"]


def test_resuming_an_older_checkpoint_sets_the_later_ones_aside(run_values):
    out = run_values["output_dir"]
    train(build_config(run_values))
    old10 = load_file(os.path.join(out, "checkpoint-10", WORLD_ADAPTER_NAME))
    resumed = train(build_config(dict(run_values, max_steps=7, resume_from_checkpoint=os.path.join(out, "checkpoint-5"))))
    assert resumed.global_step == 7
    # checkpoint-10 of the abandoned continuation is kept aside, not rotated in with the resumed run's
    assert _checkpoints(out) == ["checkpoint-5", "checkpoint-7"]
    (aside,) = [p for p in os.listdir(out) if p.startswith("superseded-")]
    kept = load_file(os.path.join(out, aside, "checkpoint-10", WORLD_ADAPTER_NAME))
    assert all(torch.equal(kept[k], old10[k]) for k in old10)


# ------------------------------------------------------------------------------------------------
# section 4: checkpoint files missing, truncated, altered


@pytest.fixture
def two_checkpoints(run_values):
    """A finished 4-step run with checkpoint-2 and checkpoint-4."""
    values = dict(run_values, max_steps=4, save_steps=2)
    train(build_config(values))
    assert _checkpoints(values["output_dir"]) == ["checkpoint-2", "checkpoint-4"]
    return values


def _truncate(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _flip_last_byte(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize(
    "name, damage, fault",
    [
        ("optimizer.pt", os.remove, "is missing"),
        ("scheduler.pt", os.remove, "is missing"),
        ("rng_state.pth", os.remove, "is missing"),
        ("optimizer.pt", _truncate, "were written (truncated or altered)"),
        (WORLD_ADAPTER_NAME, _truncate, "were written (truncated or altered)"),
        (WORLD_ADAPTER_NAME, _flip_last_byte, "does not match its recorded sha256"),
        (WORLD_ADAPTER_NAME, os.remove, "is missing"),
        ("trainer_state.json", os.remove, "is missing"),
    ],
)
def test_damaged_checkpoint_is_refused_naming_the_file_and_the_last_intact_one(two_checkpoints, write_config, capsys, name, damage, fault):
    out = two_checkpoints["output_dir"]
    damage(os.path.join(out, "checkpoint-4", name))
    code, err = _train_cli(capsys, write_config(two_checkpoints), "--max_steps", "6", "--resume_from_checkpoint", "latest")
    assert code == 2, err
    assert f"checkpoint {out}/checkpoint-4 cannot be resumed: {out}/checkpoint-4/{name} " in err and fault in err
    assert f"the last intact checkpoint is {out}/checkpoint-2" in err
    assert "Traceback" not in err
    # the named checkpoint resumes
    result = train(build_config(dict(two_checkpoints, max_steps=3, resume_from_checkpoint=os.path.join(out, "checkpoint-2"))))
    assert result.global_step == 3


def test_weights_only_resume_is_an_explicit_new_run(two_checkpoints, tmp_path, caplog):
    out = two_checkpoints["output_dir"]
    os.remove(os.path.join(out, "checkpoint-4", "optimizer.pt"))
    checkpoint = os.path.join(out, "checkpoint-4")
    with pytest.raises(CheckpointError, match=r"optimizer.pt is missing.*resume_weights_only=true"):
        train(build_config(dict(two_checkpoints, max_steps=6, resume_from_checkpoint=checkpoint)))
    # a weights-only start is a new run: not into the folder of the run it came from ...
    weights_only = dict(two_checkpoints, max_steps=2, resume_from_checkpoint=checkpoint, resume_weights_only=True)
    with pytest.raises(Exception, match="resume_weights_only starts a new run"):
        train(build_config(weights_only))
    # ... but into a new one, from exactly that checkpoint's weights, at step 0 with a fresh optimizer
    fresh_out = str(tmp_path / "from_weights")
    trainer = build_trainer(build_config(dict(weights_only, output_dir=fresh_out)), resume=checkpoint)
    saved = load_file(os.path.join(checkpoint, WORLD_ADAPTER_NAME))
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    result = train(build_config(dict(weights_only, output_dir=fresh_out)))
    assert result.global_step == 2
    assert json.load(open(os.path.join(fresh_out, TRAINING_INFO_NAME)))["initialized_from"] == os.path.abspath(checkpoint)


# ------------------------------------------------------------------------------------------------
# section 4: NaN and damaged latents, NaN gradients


@pytest.fixture
def cached_values(run_values, write_config, tmp_path):
    values = dict(run_values, max_steps=8, save_steps=4, latent_cache_dir=str(tmp_path / "latents"))
    assert main(["cache-latents", "--config", write_config(values, "cache.yaml"), "--no-progress"]) == 0
    return values


def _shard(values) -> str:
    root = values["latent_cache_dir"]
    (name,) = [n for n in os.listdir(root) if SHARD_PATTERN.match(n)]
    return os.path.join(root, name)


def _first_float_offset(path: str) -> int:
    """Byte offset of the first float32 of the first tensor in a safetensors file."""
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    first = min((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][0])
    assert first["dtype"] == "F32"
    return 8 + header_len + first["data_offsets"][0]


def test_flipped_exponent_bit_in_a_cache_shard_stops_training_naming_the_shard(cached_values, write_config, capsys):
    shard = _shard(cached_values)
    offset = _first_float_offset(shard)
    with open(shard, "r+b") as handle:  # bit 30 of a float32: its top exponent bit (x * 2**128, or inf/nan)
        handle.seek(offset + 3)
        byte = handle.read(1)
        handle.seek(offset + 3)
        handle.write(bytes([byte[0] ^ 0x40]))
    code, err = _train_cli(capsys, write_config(cached_values))
    assert code == 2
    assert f"latent cache shard {shard} is damaged: the latents of" in err and "do not match their checksum" in err
    assert not os.path.exists(os.path.join(cached_values["output_dir"], WORLD_ADAPTER_NAME))  # no model came out


def test_nan_latent_stops_training_at_its_step_naming_the_samples(cached_values, write_config, capsys):
    """One NaN (vouched for by the shard's own checksum, as a cache written before the build refused
    NaN would be) used to train an all-NaN model that exited 0 with `loss 0.0`."""
    shard = _shard(cached_values)
    with safe_open(shard, framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(shard)
    key = sorted(tensors)[0]
    tensors[key].view(-1)[0] = float("nan")
    checksums = json.loads(metadata.get(CHECKSUMS_METADATA, "{}"))
    checksums[key] = tensor_sha256(tensors[key])
    save_file(tensors, shard, metadata={**metadata, CHECKSUMS_METADATA: json.dumps(checksums)})

    code, err = _train_cli(capsys, write_config(cached_values))
    assert code == 2
    assert "non-finite training loss (nan) at step " in err
    assert "training stopped before this step changed any weight" in err
    # the batch named is one whose image has that latent (one sample per step)
    from theworld.training.latent_cache import open_for_training

    cache = open_for_training(build_config(cached_values))
    from theworld.data.loading import load_samples

    culprits = [s.id for s in load_samples(cached_values["train_data"]) if any(cache.key_for(v) == key for v in s.visuals())]
    assert culprits and any(f"samples ['{sid}']" in err for sid in culprits), err
    # every checkpoint written before the stop holds finite weights
    out = cached_values["output_dir"]
    for name in _checkpoints(out):
        assert all(torch.isfinite(t).all() for t in load_file(os.path.join(out, name, WORLD_ADAPTER_NAME)).values())


def test_nan_gradient_stops_before_the_optimizer_step(train_config_values):
    trainer = build_trainer(build_config(dict(train_config_values, max_steps=3)))
    model = trainer.model
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    name, param = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    # a finite loss whose backward gives a NaN gradient (an overflow in backward only)
    param.register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(NonFiniteError, match=rf"non-finite gradient at step 1 \(e.g. {name}\b.*\), from the batch of samples \['r"):
        trainer.train()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), start[n]), n  # the optimizer never stepped
