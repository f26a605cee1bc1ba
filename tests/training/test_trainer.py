"""What `TheWorldTrainer` relies on in transformers' `Trainer`, checked against the installed version.

The trainer extends the Trainer through public extension points (`save_model`, callbacks) and one
private method, `_load_from_checkpoint`. These tests fail, naming what moved, when a transformers
release changes any of them; the training tests then show what broke.
"""

from __future__ import annotations

import inspect

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

from theworld.training.trainer import AtomicCheckpoints, TheWorldTrainer


def test_the_one_private_hook_keeps_its_signature_and_its_caller():
    """`Trainer.train(resume_from_checkpoint=...)` reads the weights through `_load_from_checkpoint(path, model)`."""
    params = list(inspect.signature(Trainer._load_from_checkpoint).parameters)
    assert params == ["self", "resume_from_checkpoint", "model"], params
    assert list(inspect.signature(TheWorldTrainer._load_from_checkpoint).parameters) == params
    assert "self._load_from_checkpoint(resume_from_checkpoint" in inspect.getsource(Trainer.train)
    # no other private Trainer method is overridden
    private = {n for n, v in vars(TheWorldTrainer).items() if n.startswith("_") and not n.startswith("__") and hasattr(Trainer, n)}
    assert private == {"_load_from_checkpoint"}, private


def test_checkpoints_are_written_where_the_callback_points_them():
    """A checkpoint goes to `args.output_dir/checkpoint-N` through `save_model`, and `on_save` follows it:
    what `AtomicCheckpoints` redirects and publishes."""
    save_checkpoint = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir(trial=trial)" in save_checkpoint and "self.save_model(output_dir, _internal_call=True)" in save_checkpoint
    assert "run_dir = self.args.output_dir" in inspect.getsource(Trainer._get_output_dir)
    evaluate_and_save = inspect.getsource(Trainer._maybe_log_save_evaluate)
    assert evaluate_and_save.index("self._save_checkpoint(") < evaluate_and_save.index("self.callback_handler.on_save(")
    assert "control.should_save = False" in inspect.getsource(CallbackHandler.on_save)
    # should_save is decided at step and epoch ends, by the first callback, before ours runs
    assert "should_save = True" in inspect.getsource(DefaultFlowCallback.on_step_end)
    for event in ("on_step_end", "on_epoch_end", "on_save"):
        assert event in vars(TrainerCallback) and event in vars(AtomicCheckpoints)
    assert list(inspect.signature(Trainer.save_model).parameters) == ["self", "output_dir", "_internal_call"]
