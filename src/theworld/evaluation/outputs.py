"""An evaluation run's files: one JSON line per finished item, appended as it finishes, so a run resumes.

    OUT/run.json            the run's identity (model, benchmark, control, ...); another run is refused
    OUT/predictions.jsonl   scored items
    OUT/unscored.jsonl      unjudged items, and items without a reference answer
    OUT/metrics.json        written at the end (see `harness.compute_metrics`)
    OUT/shards/             while several processes run: predictions.rank<R>.jsonl and
                            unscored.rank<R>.jsonl, one pair per process, merged at the end

A crash can cut a last line in half: `read_records` drops it (that item runs again). Shards are
merged (`merge_shards`) by the main process alone, before a run starts and after it ends: the
merged file is written to a temporary file and renamed over the old one, then the shards are
deleted; a crash between the two leaves records in both places, and the next merge keeps one copy
of each item. So whatever kills a run, and whatever process count the next one uses, every
finished item is kept exactly once and only the unfinished ones run again.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
UNSCORED = "unscored.jsonl"
METRICS = "metrics.json"
RUN_INFO = "run.json"
SHARDS = "shards"


def json_safe(value: Any) -> Any:
    """Non-finite floats become None (strict JSON); tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return json_safe(value.item())
    return value


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a jsonl output file, made safe to append to.

    A crash can leave the last line without its newline: cut mid-record (not valid JSON: dropped,
    that item runs again) or whole but unterminated (kept, and its newline added). Either way
    the file ends with a newline before anything is appended, so no record is ever glued to the
    previous one.
    """
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines) and not text.endswith("\n"):
                logger.warning("%s: dropping a half-written last line; that item is run again", path)
                path.write_text("\n".join(lines[:-1]) + ("\n" if len(lines) > 1 else ""), encoding="utf-8")
                break
            raise TheWorldUserError(f"{path}:{lineno}: not valid JSON ({err}); fix or remove the file") from err
        if not isinstance(record, dict) or "id" not in record:
            raise TheWorldUserError(f"{path}:{lineno}: each line needs an 'id'")
        records.append(record)
    else:
        if text and not text.endswith("\n"):
            logger.warning("%s: the last record lacked its newline (interrupted write); newline added", path)
            with path.open("a", encoding="utf-8") as handle:
                handle.write("\n")
    return records


def check_run_identity(output_dir: Path, identity: Mapping[str, Any]) -> None:
    path = output_dir / RUN_INFO
    identity = json_safe(dict(identity))
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise TheWorldUserError(f"{path}: not valid JSON ({err})") from err
        differing = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
        if differing:
            detail = ", ".join(f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in differing)
            raise TheWorldUserError(
                f"{output_dir} holds a different evaluation run ({detail}); use another --output-dir"
            )
    elif any((output_dir / name).exists() for name in (PREDICTIONS, UNSCORED, SHARDS)):
        raise TheWorldUserError(f"{output_dir} holds predictions but no {RUN_INFO}; use another --output-dir")
    else:
        path.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


def shard_path(output_dir: Path, name: str, rank: int) -> Path:
    """Process `rank`'s shard of predictions.jsonl or unscored.jsonl: shards/predictions.rank<R>.jsonl."""
    stem = name.removesuffix(".jsonl")
    return output_dir / SHARDS / f"{stem}.rank{rank}.jsonl"


class Writer:
    """Appends one JSON line per finished item to predictions.jsonl or unscored.jsonl, or, with a
    `rank`, to that process's shards of them."""

    def __init__(self, output_dir: Path, rank: int | None = None) -> None:
        def path(name: str) -> Path:
            return output_dir / name if rank is None else shard_path(output_dir, name, rank)

        if rank is not None:
            (output_dir / SHARDS).mkdir(exist_ok=True)
        self.handles = {
            True: path(PREDICTIONS).open("a", encoding="utf-8"),
            False: path(UNSCORED).open("a", encoding="utf-8"),
        }

    def write(self, record: dict[str, Any]) -> None:
        handle = self.handles[record.get("correct") is not None]
        handle.write(json.dumps(json_safe(record)) + "\n")
        handle.flush()

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def _write_atomic(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(json_safe(dict(r))) + "\n" for r in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def merge_shards(output_dir: Path, order: Mapping[str, int]) -> int:
    """Fold every process's shards into predictions.jsonl and unscored.jsonl; return the records added.

    Run by one process while no other writes. Records already in the main file are kept as they
    are; a shard record of an item the main file already holds (a crash after the last merge's
    rename) is dropped; new records are appended in item order (`order`: item id -> index).
    """
    shards = output_dir / SHARDS
    if not shards.is_dir():
        return 0
    added = 0
    for name in (PREDICTIONS, UNSCORED):
        stem = name.removesuffix(".jsonl")
        parts = sorted(shards.glob(f"{stem}.rank*.jsonl"))
        if not parts:
            continue
        main = read_records(output_dir / name)
        known = {str(r["id"]) for r in main}
        new: dict[str, dict[str, Any]] = {}
        for part in parts:
            for record in read_records(part):
                new.setdefault(str(record["id"]), record)
        fresh = sorted((r for i, r in new.items() if i not in known), key=lambda r: order.get(str(r["id"]), len(order)))
        if fresh:
            _write_atomic(output_dir / name, main + fresh)
            added += len(fresh)
    for path in shards.iterdir():  # only after every main file holds their records
        if path.is_file():
            path.unlink()
    shards.rmdir()
    return added


def finished_records(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Item id -> record, over predictions.jsonl and unscored.jsonl (after `merge_shards`)."""
    return {str(r["id"]): r for r in read_records(output_dir / PREDICTIONS) + read_records(output_dir / UNSCORED)}
