"""transformers' own common model tests, run on Gemma 3 and on TheWorld (world off and world on).

`ModelTesterMixin` (transformers' `tests/test_modeling_common.py`, from the pinned source
distribution) is applied three times with one tester config, written here on the model of
transformers' Gemma 3 vision-to-text tester:

    TestGemma3          Gemma3ForConditionalGeneration (the reference)
    TestTheWorldOff     TheWorld, enable_world=False, the same inputs
    TestTheWorldOn      TheWorld, enable_world=True, the same inputs plus one world block per row
                        (start marker, 4 world tokens, end marker) and its `world_latents`

The tests each class skips are listed once, with their reason (`SKIPPED`), and apply to all
three. The last test compares outcomes: a test that passes for Gemma 3 and is failed or skipped
for TheWorld fails the suite.
"""

from __future__ import annotations

import unittest

import pytest
import torch
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

from theworld import TheWorld, TheWorldConfig
from theworld.registration import AUTO_MODEL_CLASSES
from theworld.testing.transformers_tests import load_test_modeling_common

common = load_test_modeling_common()

GEMMA, WORLD_OFF, WORLD_ON = "gemma", "off", "on"
PAD, BOS, EOS, IMAGE, BOI, EOI = 0, 1, 2, 4, 5, 6
START_OF_WORLD, WORLD, END_OF_WORLD = 7, 8, 9
FIRST_TEXT_ID = 10  # random text ids never hit a special token

# Tests skipped for all three classes, with the reason. Only tests Gemma 3 itself cannot pass here.
SKIPPED: dict[str, str] = {
    "test_generation_tester_mixin_inheritance": "GenerationTesterMixin (tests/generation/test_utils.py) is not in "
    "the transformers source distribution, so no tester can inherit it",
}


@pytest.fixture(scope="module", autouse=True)
def theworld_in_the_auto_tables():
    """The mixin decides which tests apply (labels for a causal LM, base-model checks) by looking class
    *names* up in transformers' Auto tables (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`, ...), which list only
    transformers' own models. Enter TheWorld's registered Auto classes there for this module."""
    added = []
    for auto_class, _ in AUTO_MODEL_CLASSES:
        names = auto_class._model_mapping._model_mapping  # the `*_MAPPING_NAMES` table of this Auto class
        if TheWorldConfig.model_type not in names:
            names[TheWorldConfig.model_type] = auto_class._model_mapping[TheWorldConfig].__name__  # what is registered
            added.append(names)
    yield
    for names in added:
        del names[TheWorldConfig.model_type]


class Gemma3WorldModelTester:
    """Tiny Gemma 3 (SigLIP 16x16 px in 4x4 patches -> 4 image tokens; 2 text layers) plus world settings.

    Each row: 4 image tokens, text, a world block (world on only) in place of 6 text tokens, text.
    """

    def __init__(self, parent: unittest.TestCase, world: str) -> None:
        self.parent = parent
        self.world = world
        self.batch_size = 7  # the eager-vs-sdpa tests run batches of 7: no rows are made up there
        self.seq_length = 20
        self.encoder_seq_length = self.seq_length
        self.is_training = True
        self.use_cache = False
        self.mm_tokens_per_image = 4
        self.world_tokens = 4  # world_image_size 16 / 8 -> a 2x2 latent grid, one token per latent position
        self.text_config = dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
            max_position_embeddings=512,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
        self.vision_config = dict(
            image_size=16,
            patch_size=4,
            num_channels=3,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            dropout=0.1,
            attention_dropout=0.1,
            vision_use_head=False,  # as in every Gemma 3 checkpoint: its forward never uses SigLIP's pooling head
        )
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.vocab_size = self.text_config["vocab_size"]
        self.hidden_size = self.text_config["hidden_size"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.pad_token_id = PAD
        self.image_size = self.vision_config["image_size"]
        self.num_channels = self.vision_config["num_channels"]

    def get_config(self) -> Gemma3Config:
        gemma = Gemma3Config(
            text_config=self.text_config,
            vision_config=self.vision_config,
            mm_tokens_per_image=self.mm_tokens_per_image,
            image_token_index=IMAGE,
            boi_token_index=BOI,
            eoi_token_index=EOI,
        )
        if self.world == GEMMA:
            return gemma
        return TheWorldConfig.from_gemma_config(
            gemma,
            enable_world=self.world == WORLD_ON,
            world_image_size=16,
            world_tokens_per_frame=self.world_tokens,
            world_num_frames=5,
            start_of_world_token_id=START_OF_WORLD,
            world_token_id=WORLD,
            end_of_world_token_id=END_OF_WORLD,
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[Gemma3Config, dict[str, torch.Tensor]]:
        config = self.get_config()
        b, n = self.batch_size, self.mm_tokens_per_image
        input_ids = common.ids_tensor([b, self.seq_length], self.vocab_size - FIRST_TEXT_ID) + FIRST_TEXT_ID
        input_ids[:, :n] = IMAGE
        token_type_ids = torch.zeros_like(input_ids)
        token_type_ids[:, :n] = 1
        inputs = {
            "pixel_values": common.floats_tensor([b, self.num_channels, self.image_size, self.image_size]),
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": token_type_ids,
        }
        if self.world == WORLD_ON:
            start = n + 2
            input_ids[:, start] = START_OF_WORLD
            input_ids[:, start + 1 : start + 1 + self.world_tokens] = WORLD
            input_ids[:, start + 1 + self.world_tokens] = END_OF_WORLD
            inputs["world_latents"] = common.floats_tensor([b, config.world_latent_channels, 1, 2, 2])
        return config, inputs


class _CommonTests(common.ModelTesterMixin):
    """Settings shared by the three classes, and the shared skip list.

    Unlike transformers' Gemma 3 tester, nothing else is switched off: with SigLIP's unused pooling
    head left out (as in Gemma 3 checkpoints) the training and missing-key tests pass for Gemma 3.
    """

    world = GEMMA
    # The mixin runs this only for models whose config file says "Copyright 2023" or later; TheWorld's
    # configuration has no such header, so the tester is told to run it for every class.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self) -> None:
        self.model_tester = Gemma3WorldModelTester(self, self.world)

    def _callTestMethod(self, method) -> None:  # unittest's hook: apply the shared skip list
        name = self._testMethodName
        if name in SKIPPED:
            self.skipTest(SKIPPED[name])
        super()._callTestMethod(method)


class TestGemma3(_CommonTests, unittest.TestCase):
    all_model_classes = (Gemma3ForConditionalGeneration,)


class TestTheWorldOff(_CommonTests, unittest.TestCase):
    all_model_classes = (TheWorld,)
    world = WORLD_OFF


class TestTheWorldOn(_CommonTests, unittest.TestCase):
    all_model_classes = (TheWorld,)
    world = WORLD_ON
    # Tests that build their own inputs from `input_ids` also pass these (the world block needs its latents).
    additional_model_inputs = ["world_latents"]


def test_theworld_passes_every_test_gemma_passes(tester_outcomes):
    """Runs last: every test passing for Gemma 3 passed for TheWorld off and on (not failed, not skipped)."""
    gemma = tester_outcomes.get("TestGemma3", {})
    if not gemma:
        pytest.skip("the Gemma 3 tests did not run (deselected)")
    problems = []
    for name in ("TestTheWorldOff", "TestTheWorldOn"):
        ours = tester_outcomes.get(name, {})
        for test, outcome in sorted(gemma.items()):
            if outcome == "passed" and test in ours and ours[test] != "passed":
                problems.append(f"{name}::{test} {ours[test]} (passed for Gemma 3)")
    assert not problems, "\n".join(problems)
