"""Which tokens mark a world block: Gemma's reserved ones, or new ones only when there are none."""

from __future__ import annotations

from transformers import GemmaTokenizer

from theworld.processing.tokens import NAMED_TOKENS, RESERVED_TOKENS, resolve_world_tokens


def test_reserved_tokens_are_reused_without_growing_the_vocabulary(tiny_gemma_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma_dir)
    size = len(tokenizer)
    tokens = resolve_world_tokens(tokenizer)
    assert (tokens.start, tokens.world, tokens.end) == RESERVED_TOKENS and not tokens.added
    assert tokens.world_id == tokenizer.convert_tokens_to_ids("<unused1>") and len(tokenizer) == size


def test_a_tokenizer_without_reserved_tokens_gets_new_ones():
    tokenizer = GemmaTokenizer()  # only <pad>, <eos>, <bos>, <unk>, <mask>
    size = len(tokenizer)
    tokens = resolve_world_tokens(tokenizer)
    assert tokens.added and (tokens.start, tokens.world, tokens.end) == NAMED_TOKENS
    assert len(tokenizer) == size + 3 and tokens.world_id >= size
    assert tokenizer.tokenize("<start_of_world><world_soft_token>") == ["<start_of_world>", "<world_soft_token>"]
    again = resolve_world_tokens(tokenizer)  # now named tokens exist: found, not added twice
    assert not again.added and again.world_id == tokens.world_id and len(tokenizer) == size + 3
