"""The files TheWorld writes are the ones both transformers versions read (runs under both).

transformers 5 left to itself writes SigLIP keys without `vision_model`, rope settings only as
`rope_parameters` and `extra_special_tokens` as a list; transformers 4.57 re-initialises the
vision tower, falls back to default rope and fails on the list, respectively. These tests pin the
portable forms; test_interchange.py shows that they load alike.
"""

from __future__ import annotations

import json
import re

import torch
from safetensors import safe_open

from theworld import TheWorld, TheWorldConfig, TheWorldProcessor
from theworld.model.configuration import DATACLASS_CONFIGS, WORLD_DEFAULTS, add_legacy_rope_fields
from theworld.model.compat import LEGACY_KEY_MAPPING, gemma3_key_mapping


def test_world_defaults_are_the_config_defaults():
    config = TheWorldConfig()
    assert {key: getattr(config, key) for key in WORLD_DEFAULTS} == WORLD_DEFAULTS
    if DATACLASS_CONFIGS:  # transformers 5: the annotated fields must not drift from the shared table
        import dataclasses

        fields = {f.name: f.default for f in dataclasses.fields(TheWorldConfig) if f.name in WORLD_DEFAULTS}
        assert fields == WORLD_DEFAULTS


def test_theworld_save_is_portable(rope_gemma_dir, worker, tmp_path):
    model = TheWorld.from_pretrained(rope_gemma_dir, enable_world=False)
    model.save_pretrained(tmp_path)
    TheWorldProcessor.from_pretrained(rope_gemma_dir).save_pretrained(tmp_path)

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    vision = [k for k in keys if k.startswith("vision_tower.")]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)
    assert any(k.startswith("language_model.model.") for k in keys)
    assert not any(k.startswith("model.") for k in keys)

    text = json.loads((tmp_path / "config.json").read_text())["text_config"]
    assert text["rope_theta"] == worker.ROPE["rope_theta"]
    assert text["rope_local_base_freq"] == worker.ROPE["rope_local_base_freq"]
    assert text["rope_scaling"] == worker.ROPE["rope_scaling"]

    tokenizer = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tokenizer["extra_special_tokens"] == {
        "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
    }  # fmt: skip
    assert "<unused0>" in tokenizer["additional_special_tokens"]


def test_reloaded_rope_is_the_saved_rope(rope_gemma_dir, tmp_path):
    model = TheWorld.from_pretrained(rope_gemma_dir, enable_world=False)
    model.save_pretrained(tmp_path)
    again = TheWorld.from_pretrained(str(tmp_path), enable_world=False)
    for name, buffer in model.named_buffers():
        if name.endswith("inv_freq"):
            assert torch.equal(again.get_buffer(name), buffer), name


def test_add_legacy_rope_fields():
    params = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    config = add_legacy_rope_fields({"text_config": {"rope_parameters": params}})["text_config"]
    assert config["rope_theta"] == 1e6 and config["rope_local_base_freq"] == 1e4
    assert config["rope_scaling"] == {"rope_type": "linear", "factor": 8.0}
    plain = add_legacy_rope_fields({"text_config": {"rope_parameters": {"rope_type": "default", "rope_theta": 5.0}}})
    assert plain["text_config"]["rope_scaling"] is None and plain["text_config"]["rope_theta"] == 5.0
    kept = add_legacy_rope_fields({"text_config": {"rope_parameters": params, "rope_theta": 3.0}})
    assert kept["text_config"]["rope_theta"] == 3.0  # present values are never overwritten
    assert add_legacy_rope_fields({"text_config": {"rope_theta": 2.0}}) == {"text_config": {"rope_theta": 2.0}}


def test_key_mapping_reads_both_vision_layouts():
    mapping = gemma3_key_mapping(TheWorld)
    if not LEGACY_KEY_MAPPING:  # transformers 5 converts keys itself
        assert mapping is None
        return

    def rename(key: str) -> str:
        for pattern, replacement in mapping.items():
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        return key

    target = "model.vision_tower.vision_model.embeddings.patch_embedding.weight"
    assert rename("vision_tower.vision_model.embeddings.patch_embedding.weight") == target
    assert rename("vision_tower.embeddings.patch_embedding.weight") == target
    assert rename("language_model.model.layers.0.mlp.up_proj.weight") == "model.language_model.layers.0.mlp.up_proj.weight"
    assert rename("world_projector.proj.0.weight") == "world_projector.proj.0.weight"
