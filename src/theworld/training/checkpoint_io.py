"""Checkpoint files that are either whole and verified, or refused with the file's name.

Small functions any checkpoint writer or reader calls (the Trainer subclass today, a callback or
a hand-written loop tomorrow); none of them knows about the Trainer:

* `write_checksums(folder)`: sha256 and size of every file a finished checkpoint holds, in
  `checksums.json`; every file and the folder are fsynced first, so what the manifest vouches for
  is on disk before `publish_directory` renames the folder into place (and fsyncs its parent).
* `verify_checkpoint(folder, required=...)`: every file the manifest lists is present, of its
  size and hash, and the files the caller is about to read are among them. A failure raises
  `CheckpointError` naming the file, what is wrong with it, and the newest checkpoint of the same
  run that verifies (`last_intact_checkpoint`), the one to resume from instead.
* `list_checkpoints(run_dir)` / `clear_run(run_dir)`: the `checkpoint-N` folders of a run, and
  removing a run's own files for `overwrite_output_dir`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

CHECKSUMS_NAME = "checksums.json"
CHECKSUMS_FORMAT = "theworld-checkpoint-checksums"
CHECKSUMS_VERSION = 1
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
_CHUNK = 1 << 20


class CheckpointError(TheWorldUserError):
    """A checkpoint file is missing, truncated or altered; the message names it and where to resume instead."""

    def __init__(self, message: str, path: str | None = None, intact: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.intact = intact


# ------------------------------------------------------------------------------------------------
# durable writes


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk (the rename that publishes it must not outrun it)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the data itself was synced
    finally:
        os.close(fd)


def publish_directory(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename a complete staged folder to its final name (replacing an existing one) and sync the parent."""
    staged, final = str(staged), str(final)
    if not os.path.isdir(staged):
        raise RuntimeError(f"checkpoint staging folder {staged} is missing")
    old = None
    if os.path.exists(final):
        old = staged + ".replaced"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(staged, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# checksums


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file under `folder` (relative, '/'-separated, sorted), the manifest itself excluded."""
    names = []
    for root, _, files in os.walk(folder):
        for name in files:
            relative = Path(root, name).relative_to(folder).as_posix()
            if relative != CHECKSUMS_NAME:
                names.append(relative)
    return sorted(names)


def write_checksums(folder: str | os.PathLike) -> dict[str, dict[str, object]]:
    """Hash every file of a finished checkpoint folder into `checksums.json`; fsync files, manifest, folder.

    Call it once everything is written and before the folder is published. Returns the entries.
    """
    folder = Path(folder)
    entries: dict[str, dict[str, object]] = {}
    for relative in _files(folder):
        path = folder / relative
        fsync_file(path)
        entries[relative] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"format": CHECKSUMS_FORMAT, "version": CHECKSUMS_VERSION, "algorithm": "sha256", "files": entries}
    target = folder / CHECKSUMS_NAME
    with open(target, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            fsync_dir(os.path.join(root, name))
    fsync_dir(folder)
    return entries


def read_checksums(folder: str | os.PathLike) -> dict[str, dict[str, object]]:
    """The manifest's entries; raises CheckpointError (without the resume hint) when absent or unreadable."""
    path = Path(folder) / CHECKSUMS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} is missing, so the checkpoint's files cannot be verified", path=str(path))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != CHECKSUMS_FORMAT or not isinstance(files, dict):
            raise ValueError(f"not a {CHECKSUMS_FORMAT} file")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is unreadable ({err})", path=str(path)) from None
    return files


def checkpoint_problems(
    folder: str | os.PathLike, required: Iterable[str] = (), only_required: bool = False
) -> list[tuple[str, str]]:
    """(file, what is wrong) for every fault of a checkpoint folder; empty when it verifies.

    Every file the manifest lists is checked, or with `only_required` just the `required` ones
    (a weights-only resume does not read the optimizer); `required` files must be listed.
    """
    folder = Path(folder)
    try:
        entries = read_checksums(folder)
    except CheckpointError as err:
        return [(str(err.path), str(err))]
    required = tuple(required)
    problems: list[tuple[str, str]] = []
    for name in required:
        if name not in entries:
            problems.append((str(folder / name), f"{folder / name} is not recorded in {CHECKSUMS_NAME}"))
    names = [n for n in required if n in entries] if only_required else sorted(entries)
    for name in names:
        entry, path = entries[name], folder / name
        if not path.is_file():
            problems.append((str(path), f"{path} is missing"))
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            problems.append((str(path), f"{path} is {size} bytes, {entry.get('size')} were written (truncated or altered)"))
        elif file_sha256(path) != entry.get("sha256"):
            problems.append((str(path), f"{path} does not match its recorded sha256 (altered or corrupted)"))
    return problems


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's published `checkpoint-N` folders, oldest (smallest N) first."""
    root = Path(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def last_intact_checkpoint(
    run_dir: str | os.PathLike,
    exclude: str | os.PathLike | None = None,
    required: Iterable[str] = (),
    only_required: bool = False,
) -> Path | None:
    """The newest checkpoint of the run that verifies (`exclude`, the damaged one, skipped)."""
    required = tuple(required)
    skip = os.path.realpath(exclude) if exclude is not None else None
    for candidate in reversed(list_checkpoints(run_dir)):
        if skip is not None and os.path.realpath(candidate) == skip:
            continue
        if not checkpoint_problems(candidate, required, only_required):
            return candidate
    return None


def verify_checkpoint(
    folder: str | os.PathLike, required: Iterable[str] = (), only_required: bool = False, weights: Iterable[str] = ()
) -> None:
    """Raise `CheckpointError` unless the checkpoint verifies (see `checkpoint_problems`).

    The message names the first faulty file, counts the others, and names the newest checkpoint
    of the same run folder that verifies, the one to resume from instead. When `weights` (the
    files a weights-only start reads) are intact, it also offers `resume_weights_only`.
    """
    folder = Path(folder)
    required = tuple(required)
    problems = checkpoint_problems(folder, required, only_required)
    if not problems:
        return
    path, first = problems[0]
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    intact = last_intact_checkpoint(folder.parent, exclude=folder, required=required, only_required=only_required)
    hint = (
        f"the last intact checkpoint is {intact}: resume from it with resume_from_checkpoint={intact}"
        if intact is not None
        else f"no intact checkpoint is left in {folder.parent}"
    )
    weights = tuple(weights)
    if not only_required and weights and not checkpoint_problems(folder, weights, only_required=True):
        hint += " (or start a new run from this checkpoint's weights alone: resume_weights_only=true)"
    raise CheckpointError(
        f"checkpoint {folder} cannot be resumed: {first}{more}; {hint}",
        path=path,
        intact=str(intact) if intact is not None else None,
    )


# ------------------------------------------------------------------------------------------------
# run folders


def clear_run(run_dir: str | os.PathLike, own_files: Iterable[str]) -> list[str]:
    """Delete a run's checkpoints and the named top-level files/folders of its output; nothing else.

    Returns what was removed (names relative to `run_dir`).
    """
    root = Path(run_dir)
    removed = []
    for checkpoint in list_checkpoints(root):
        shutil.rmtree(checkpoint)
        removed.append(checkpoint.name)
    for name in own_files:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(name)
        elif path.exists() or path.is_symlink():
            path.unlink()
            removed.append(name)
    return removed
