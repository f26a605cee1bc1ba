"""What a checkpoint name points at: a local folder, a Hub id, or a folder that is not there.

Two questions, one owner each:

* `check_model_path(name)`: a name that can only be a local path and does not exist fails with
  "folder X does not exist" before transformers turns it into a Hub lookup ("couldn't connect").
* `resolve_base_checkpoint(recorded, folder, override)`: the base Gemma 3 checkpoint a saved
  TheWorld folder names. Saves record it relative to the folder when it is a local folder
  (`portable_base_reference`: a run moved or copied together with its base still loads), as given
  when it is a Hub id. `base_model_name_or_path=` at load time replaces the recorded value.
"""

import os
from pathlib import Path

from theworld.errors import TheWorldUserError


def looks_local(name: str) -> bool:
    """True when `name` can only be a filesystem path, never a Hub id of the form 'owner/name'.

    Gemma 3 and TheWorld checkpoints on the Hub always have an owner. 'runs/gemma' is read as a
    path when ./runs exists: a mistyped folder there, not the Hub repo 'runs/gemma'.
    """
    if os.path.exists(name) or os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name:
        return True
    parts = name.split("/")
    return len(parts) != 2 or not all(parts) or os.path.isdir(parts[0])


def check_model_path(name: str | os.PathLike, what: str = "model") -> str:
    """`name` as a string; raises naming the folder when it is a local path that does not exist."""
    name = os.fspath(name)
    if not os.path.exists(os.path.expanduser(name)) and looks_local(name):
        raise TheWorldUserError(f"{what} folder {name} does not exist")
    return os.path.expanduser(name) if name.startswith("~") else name


def portable_base_reference(base: str | None, folder: str | os.PathLike) -> str | None:
    """What a save in `folder` records as its base checkpoint: a local folder relative to `folder`
    ('./x', '../x'), anything else (a Hub id) unchanged."""
    if not base or not os.path.isdir(os.path.expanduser(base)):
        return base
    relative = os.path.relpath(os.path.abspath(os.path.expanduser(base)), os.path.abspath(folder))
    return relative if relative.startswith(".") else f".{os.sep}{relative}"


def absolute_base_reference(recorded: str | None, folder: str | os.PathLike) -> str | None:
    """A recorded reference made independent of the working directory: './x', '../x' are read
    relative to `folder` (the saved folder that recorded them); absolute paths and Hub ids stay."""
    if not recorded or not recorded.startswith("."):
        return recorded
    return os.path.normpath(os.path.join(os.path.abspath(folder), recorded))


def resolve_base_checkpoint(recorded: str | None, folder: str | os.PathLike, override: str | None = None) -> str:
    """The base checkpoint of the saved TheWorld folder `folder`, checked to exist when local."""
    config_file = Path(folder, "config.json")
    if override:
        return check_model_path(override, what="base checkpoint (base_model_name_or_path=)")
    if not recorded:
        raise TheWorldUserError(
            f"{folder} holds world weights only and {config_file} names no base checkpoint: "
            "pass base_model_name_or_path= (the Gemma 3 checkpoint it was trained on)"
        )
    base = absolute_base_reference(recorded, folder)
    if not os.path.exists(base) and looks_local(recorded):
        raise TheWorldUserError(
            f"base checkpoint {base} not found ({config_file} records {recorded!r}): it was moved or deleted; "
            f"pass base_model_name_or_path= with its new location, or set it in {config_file}"
        )
    return base
