"""The tiny world-model repo has Cosmos-Predict2 Video2World's layout; diffusers' pipeline loads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from diffusers import Cosmos2VideoToWorldPipeline, CosmosTransformer3DModel

from theworld.testing.tiny_world_model import TinyTestSafetyChecker


def test_layout_matches_the_real_repo(tiny_world_dir):
    folder = Path(tiny_world_dir)
    for part in ("vae", "transformer", "scheduler", "text_encoder", "tokenizer"):
        assert (folder / part).is_dir(), part
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "Cosmos2VideoToWorldPipeline"
    config = CosmosTransformer3DModel.load_config(folder / "transformer")
    assert config["in_channels"] == 17 and config["out_channels"] == 16  # 16 latent + condition mask
    assert tuple(config["patch_size"]) == (1, 2, 2) and config["concat_padding_mask"] is False


def test_pipeline_loads_it_with_the_test_double_only(tiny_world_dir):
    pipe = Cosmos2VideoToWorldPipeline.from_pretrained(tiny_world_dir, safety_checker=TinyTestSafetyChecker())
    assert pipe.transformer.config.text_embed_dim == pipe.text_encoder.config.d_model
    assert pipe.scheduler.config.sigma_max == 80.0  # registered by the pipeline itself
    from diffusers.utils import is_cosmos_guardrail_available

    if not is_cosmos_guardrail_available():  # without a checker the pipeline builds cosmos_guardrail's
        with pytest.raises(ImportError, match="cosmos_guardrail"):
            Cosmos2VideoToWorldPipeline.from_pretrained(tiny_world_dir)


def test_t5_tokenizer_knows_the_default_negative_prompt(tiny_world_dir):
    from diffusers.pipelines.cosmos.pipeline_cosmos2_video2world import DEFAULT_NEGATIVE_PROMPT
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(tiny_world_dir) / "tokenizer")
    ids = tokenizer(DEFAULT_NEGATIVE_PROMPT).input_ids
    assert tokenizer.unk_token_id not in ids and ids[-1] == tokenizer.eos_token_id
