"""World tokens: batching, generate, labels, freezing, bidirectional world blocks."""

from __future__ import annotations

import torch

from theworld.evaluation.harness import count_world_usage
from theworld.testing.inputs import clip_chat, image_chat


def test_world_tokens_change_logits_and_are_counted(world_model, processor):
    inputs = processor.apply_chat_template(image_chat(0), tokenize=True, return_dict=True, return_tensors="pt")
    assert inputs["world_pixel_values"].shape == (1, 3, 1, 64, 64)
    with count_world_usage(world_model) as usage, torch.no_grad():
        with_world = world_model(**inputs).logits
        zeroed = world_model(**{**inputs, "world_pixel_values": torch.zeros_like(inputs["world_pixel_values"])}).logits
    assert usage.world_token_count == 2 * 16
    assert (with_world - zeroed).abs().max() > 1e-3


def test_left_padded_batch_rows_equal_alone(world_model, processor):
    chats = [clip_chat(1, frames=5), clip_chat(2, frames=5, question="Will the ball reach the wall within three steps?")]
    processor.tokenizer.padding_side = "left"
    batch = processor.apply_chat_template(
        chats, tokenize=True, return_dict=True, return_tensors="pt", padding=True, add_generation_prompt=True
    )
    assert batch["attention_mask"][0].sum() != batch["attention_mask"][1].sum()  # really different lengths
    with torch.no_grad():
        batched = world_model(**batch).logits[:, -1]
        for row, chat in enumerate(chats):
            alone = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
            single = world_model(**alone).logits[0, -1]
            assert torch.allclose(batched[row], single, atol=1e-4), (batched[row] - single).abs().max()


def test_generate_equals_cache_free_greedy_loop(world_model, processor):
    inputs = processor.apply_chat_template(clip_chat(3, frames=9), tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
    generated = world_model.generate(**inputs, max_new_tokens=6, do_sample=False)
    ids, mask, types = inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]
    with torch.no_grad():
        for _ in range(6):
            logits = world_model(
                input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=inputs["pixel_values"],
                world_pixel_values=inputs["world_pixel_values"], use_cache=False,
            ).logits
            next_id = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], 1)
            mask = torch.cat([mask, torch.ones_like(next_id)], 1)
            types = torch.cat([types, torch.zeros_like(next_id)], 1)
    assert torch.equal(generated, ids)


def test_world_block_is_bidirectional(world_model, processor):
    """With world_bidirectional the first world token sees the last one; causally it could not."""
    inputs = processor.apply_chat_template(image_chat(4), tokenize=True, return_dict=True, return_tensors="pt")
    world_positions = (inputs["input_ids"][0] == world_model.config.world_token_id).nonzero().squeeze(-1)
    first = int(world_positions[0])
    with torch.no_grad():
        latents = world_model.world_encoder(inputs.pop("world_pixel_values"))  # (1, 16, 1, 8, 8)
    changed_latents = latents.clone()
    changed_latents[..., 6:, 6:] += 3.0  # only the last 2x2 patch: only the last world token changes

    def first_world_state(world_latents):
        with torch.no_grad():
            out = world_model(**inputs, world_latents=world_latents, output_hidden_states=True)
        return out.hidden_states[-1][0, first]

    assert (first_world_state(latents) - first_world_state(changed_latents)).abs().max() > 0
    world_model.config.world_bidirectional = False
    try:
        assert (first_world_state(latents) - first_world_state(changed_latents)).abs().max() == 0
    finally:
        world_model.config.world_bidirectional = True


def test_labels_respected_and_placeholders_ignored(world_model, processor):
    inputs = processor.apply_chat_template(image_chat(5, answer="The ball moves left."), tokenize=True, return_dict=True, return_tensors="pt")
    ids = inputs["input_ids"]
    labels = ids.clone()  # a careless caller supervising everything, placeholders included
    with torch.no_grad():
        out = world_model(**inputs, labels=labels)
    placeholders = (ids == world_model.config.world_token_id) | (ids == world_model.config.image_token_id)
    expected_labels = labels.masked_fill(placeholders, -100)
    shift_logits, shift_labels = out.logits[:, :-1].float(), expected_labels[:, 1:]
    expected = torch.nn.functional.cross_entropy(shift_logits.flatten(0, 1), shift_labels.flatten(), ignore_index=-100)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    # A caller's own -100s stay -100: supervising only the last token gives that token's loss.
    only_last = torch.full_like(ids, -100)
    only_last[0, -1] = ids[0, -1]
    with torch.no_grad():
        loss_last = world_model(**inputs, labels=only_last).loss
    manual = torch.nn.functional.cross_entropy(out.logits[0, -2:-1].float(), ids[0, -1:])
    assert torch.allclose(loss_last, manual, atol=1e-6)


def test_default_freezing_trains_only_world_modules(world_model):
    trainable = {name for name, p in world_model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("world_projector.") for name in trainable)
    n_trainable, total, pct = world_model.get_trainable_parameters()
    expected = sum(p.numel() for p in world_model.world_projector.parameters())
    assert n_trainable == expected
    assert total == sum(p.numel() for p in {id(p): p for p in world_model.parameters()}.values())
    assert abs(pct - 100 * expected / total) < 1e-9


def mixed_chats():
    """An image, a 9-frame clip and a 5-frame clip: world blocks of 1, 3 and 2 latent frames."""
    return [
        image_chat(6, question="Describe this scene in more words"),
        clip_chat(7, frames=9),
        clip_chat(8, frames=5, question="Will the ball reach the wall within three steps?"),
    ]


def test_left_padded_mixed_batch_rows_equal_alone(world_model, processor):
    chats = mixed_chats()
    batch = processor.apply_chat_template(
        chats, tokenize=True, return_dict=True, return_tensors="pt", padding=True, padding_side="left",
        add_generation_prompt=True,
    )  # fmt: skip
    assert batch["world_latent_frames"].tolist() == [1, 3, 2]
    assert batch["world_pixel_values"].shape == (3, 3, 9, 64, 64)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == 3  # really left-padded
    with torch.no_grad():
        batched = world_model(**batch).logits[:, -1]
        for row, chat in enumerate(chats):
            alone = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
            assert "world_latent_frames" not in alone
            single = world_model(**alone).logits[0, -1]
            assert torch.allclose(batched[row], single, atol=1e-4), (row, (batched[row] - single).abs().max())


def test_mixed_batch_generate_equals_each_alone(world_model, processor):
    chats = mixed_chats()
    batch = processor.apply_chat_template(
        chats, tokenize=True, return_dict=True, return_tensors="pt", padding=True, padding_side="left",
        add_generation_prompt=True,
    )  # fmt: skip
    out = world_model.generate(**batch, max_new_tokens=5, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row, chat in enumerate(chats):
        alone = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
        single = world_model.generate(**alone, max_new_tokens=5, do_sample=False)[0, alone["input_ids"].shape[1] :]
        assert out[row].tolist() == single.tolist(), row


def test_mixed_latents_match_mixed_pixels(world_model, processor):
    """The latent cache's input: per-item latents padded to the longest, with the same counts."""
    batch = processor.apply_chat_template(mixed_chats(), tokenize=True, return_dict=True, return_tensors="pt", padding=True)
    counts = batch["world_latent_frames"].tolist()
    pixels = batch["world_pixel_values"]
    with torch.no_grad():
        per_item = [world_model.world_encoder(pixels[i : i + 1, :, : 1 + 4 * (c - 1)]) for i, c in enumerate(counts)]
        latents = torch.cat([torch.nn.functional.pad(z, (0, 0, 0, 0, 0, 3 - z.shape[2])) for z in per_item])
        from_pixels = world_model.get_world_features(pixels, world_latent_frames=batch["world_latent_frames"])
        from_latents = world_model.get_world_features(world_latents=latents, world_latent_frames=batch["world_latent_frames"])
    assert [f.shape[0] for f in from_latents] == [16 * c for c in counts]
    for a, b in zip(from_pixels, from_latents):
        assert torch.allclose(a, b, atol=1e-5)


def test_same_length_batch_keeps_the_one_length_path(world_model, processor):
    """Counts that all equal the input length change nothing, bit for bit (and the processor omits them)."""
    batch = processor.apply_chat_template(
        [clip_chat(1, frames=5), clip_chat(2, frames=5)], tokenize=True, return_dict=True, return_tensors="pt", padding=True
    )
    assert "world_latent_frames" not in batch
    with torch.no_grad():
        plain = world_model(**batch).logits
        with_counts = world_model(**batch, world_latent_frames=torch.tensor([2, 2])).logits
    assert torch.equal(plain, with_counts)
