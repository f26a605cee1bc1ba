"""Which tokenizer tokens mark a world block: Gemma's reserved `<unused0..2>`, so the vocabulary stays Gemma's
(no resize, no untrained rows); only a tokenizer without reserved tokens gets new ones."""

from __future__ import annotations

from dataclasses import dataclass

NAMED_TOKENS = ("<start_of_world>", "<world_soft_token>", "<end_of_world>")
RESERVED_TOKENS = ("<unused0>", "<unused1>", "<unused2>")


@dataclass(frozen=True)
class WorldTokens:
    start: str
    world: str
    end: str
    start_id: int
    world_id: int
    end_id: int
    added: bool  # True when the tokenizer had no reserved tokens and new ones were added


def _ids_if_present(tokenizer, tokens: tuple[str, str, str]) -> list[int] | None:
    vocab = tokenizer.get_vocab()
    if all(token in vocab for token in tokens):
        return [vocab[token] for token in tokens]
    return None


def resolve_world_tokens(tokenizer) -> WorldTokens:
    """Named world tokens if the tokenizer has them, else Gemma's reserved ones, else new tokens."""
    for tokens in (NAMED_TOKENS, RESERVED_TOKENS):
        ids = _ids_if_present(tokenizer, tokens)
        if ids is not None:
            return WorldTokens(*tokens, *ids, added=False)
    add_special_tokens_keeping(tokenizer, list(NAMED_TOKENS))
    ids = _ids_if_present(tokenizer, NAMED_TOKENS)
    assert ids is not None
    return WorldTokens(*NAMED_TOKENS, *ids, added=True)


def add_special_tokens_keeping(tokenizer, tokens: list[str]) -> None:
    """Add `tokens` as additional special tokens, keeping the tokenizer's own (the keyword differs in 4.x and 5)."""
    import inspect

    params = inspect.signature(tokenizer.add_special_tokens).parameters
    keep = "replace_extra_special_tokens" if "replace_extra_special_tokens" in params else "replace_additional_special_tokens"
    tokenizer.add_special_tokens({"additional_special_tokens": tokens}, **{keep: False})
