"""Every sample checked before step 1, for what the data loaders cannot know without the model.

The loaders (`theworld.data`) check that each visual opens. What depends on the run is checked
here, once over the whole data set, so that a bad sample does not surface as a traceback at the
step that first draws it (and again at every resume):

* clip lengths: the world path takes 4k+1 frames, at most `world_num_frames`
  (`theworld.processing.processor.world_frames_problem`, the rule the processor applies). Other
  clips are skipped like an unreadable image: a warning naming the sample, counted against
  `max_skip_fraction` (these skips are counted here, apart from the loaders' own);
* something to learn: a conversation without an assistant turn has no supervised token. It is
  left out with a warning naming it, and a data set with nothing left to learn is an error.

What needs the tokenizer (a sample dropped for `max_length`) is decided by the collator as it
builds batches; the trainer fails a run that ends an epoch without one supervised token.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from theworld.data.images import SkipCounter
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.processing.processor import world_frames_problem

logger = logging.getLogger(__name__)


def clip_problem(sample: Sample, world_num_frames: int | None, temporal_compression: int = 4) -> tuple[str, str] | None:
    """`(clip, reason)` for the sample's first clip the run cannot use, or None.

    `world_num_frames=None` means the world path is off: Gemma's image path takes one frame of a
    clip of any length, so only an empty clip is a problem.
    """
    for visual in sample.visuals():
        if not isinstance(visual, (list, tuple)):
            continue
        where = f"clip {visual[0]} ..." if visual else "clip"
        if not visual:
            return where, "a clip has no frames"
        if world_num_frames is not None:
            reason = world_frames_problem(len(visual), world_num_frames, temporal_compression)
            if reason is not None:
                return where, reason
    return None


def has_assistant_turn(sample: Sample) -> bool:
    return any(message.get("role") == "assistant" for message in sample.messages)


def kept_positions(
    samples: Iterable[Sample],
    *,
    source: str,
    max_skip_fraction: float,
    world_num_frames: int | None,
    temporal_compression: int = 4,
) -> array:
    """The positions of the samples a run can use; see the module docstring for what is checked.

    Raises `TheWorldUserError` (naming `source`) when more than `max_skip_fraction` of the samples
    have unusable clips, or when no sample is left with something to learn.
    """
    counter = SkipCounter(max_skip_fraction)
    kept = array("q")
    unsupervised: list[str] = []
    for position, sample in enumerate(samples):
        problem = clip_problem(sample, world_num_frames, temporal_compression)
        if problem is not None:
            counter.skip(sample.id, *problem)
            continue
        counter.keep()
        if not has_assistant_turn(sample):
            logger.warning("sample %s has no assistant turn: nothing to learn (0 supervised tokens); left out", sample.id)
            unsupervised.append(sample.id)
            continue
        kept.append(position)
    counter.raise_if_too_many(source)
    if not kept:
        reasons = []
        if unsupervised:
            reasons.append(f"{len(unsupervised)} with no assistant turn (e.g. {', '.join(unsupervised[:3])})")
        if counter.skipped:
            reasons.append(f"{len(counter.skipped)} with unusable clips")
        raise TheWorldUserError(
            f"{source}: nothing to learn: of {counter.total} samples, {' and '.join(reasons) or 'none are left'}. "
            "Training supervises assistant turns only: check the data's roles (e.g. LLaVA 'gpt', messages 'assistant')"
        )
    if unsupervised or counter.skipped:
        logger.warning(
            "%s: %d of %d samples kept (%d without an assistant turn, %d with unusable clips)",
            source, len(kept), counter.total, len(unsupervised), len(counter.skipped),
        )  # fmt: skip
    return kept


def check_samples(samples: Sequence[Sample], **kwargs: Any) -> list[Sample]:
    """The samples a run can use, in order (`kept_positions`)."""
    return [samples[position] for position in kept_positions(samples, **kwargs)]


def check_dataset(dataset: Any, world_config: Any, *, source: str, max_skip_fraction: float) -> None:
    """Keep only the usable samples of a `SampleDataset`, for a run with this `TheWorldConfig`'s world settings."""
    world = bool(getattr(world_config, "enable_world", False))
    dataset.keep(
        kept_positions(
            dataset,
            source=source,
            max_skip_fraction=max_skip_fraction,
            world_num_frames=int(world_config.world_num_frames) if world else None,
            temporal_compression=int(getattr(world_config, "world_temporal_compression", 4)),
        )
    )
