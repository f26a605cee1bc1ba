"""Benchmark loaders, registered in `BENCHMARKS`: each published format read into `EvalItem`s (docs/data-formats.md).

Evaluation never drops items quietly (a shrunken denominator inflates accuracy): a missing image,
an unreadable row, an answer outside its choices or a duplicate id raises naming file and row.
"""

from __future__ import annotations

import ast
import functools
import logging
import re
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from PIL import Image

from theworld.data.images import resolve_visual
from theworld.data.openspatial import draw_boxes, name_regions
from theworld.data.qa import read_qa
from theworld.data.records import hub_rows, iter_rows, looks_like_hub_id
from theworld.data.vsr import VSR_CHOICES, read_vsr
from theworld.errors import TheWorldUserError
from theworld.evaluation.items import EvalItem
from theworld.evaluation.parsing import parse_clock, parse_quantity

logger = logging.getLogger(__name__)

Row = tuple[str, dict[str, Any]]  # (where: "file row i" for messages, the record)

_SUFFIXES = (".jsonl", ".json", ".parquet")

# Drawn SpatialRGPT images are kept in memory; Gemma sees 896x896 and the VAE less, so a
# longer side above this only costs memory (1406 full-size images would take several GB).
MAX_DRAWN_SIDE = 1024


# ---------------------------------------------------------------------------- reading rows (theworld.data.records)


def _read_file(path: Path, limit: int | None) -> list[Row]:
    if path.suffix.lower() not in _SUFFIXES:
        raise TheWorldUserError(f"{path}: unsupported file type (expected one of {', '.join(_SUFFIXES)})")
    return list(islice(iter_rows(path), limit))


def _split_files(folder: Path, config: str | None, split: str | None) -> list[Path]:
    """The files of one split in a local snapshot: names whose -/_/. parts include the split."""
    root = folder / config if config and (folder / config).is_dir() else folder
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if split is not None:
        files = [p for p in files if split in re.split(r"[-_.]", p.stem)]
    if not files:
        raise TheWorldUserError(f"{root}: no {'/'.join(_SUFFIXES)} file for split {split!r}")
    if split is None and len(files) > 1:
        raise TheWorldUserError(f"{root}: several data files ({', '.join(p.name for p in files)}); give a split")
    return files


def read_rows(
    data: str, config: str | None, split: str | None, limit: int | None, image_folder: str | None = None
) -> tuple[list[Row], Path | None]:
    """Records of a local file, snapshot folder or Hub dataset, and the image folder (default: the data's own)."""
    if limit is not None and limit < 0:
        raise TheWorldUserError(f"limit must be >= 0, got {limit}")
    folder = Path(image_folder).expanduser().resolve() if image_folder else None
    path = Path(data).expanduser()
    if path.is_file():
        return _read_file(path, limit), folder or path.parent.resolve()
    if path.is_dir():
        rows: list[Row] = []
        for file in _split_files(path, config, split):
            rows.extend(_read_file(file, None if limit is None else limit - len(rows)))
        return rows, folder or path.resolve()
    if looks_like_hub_id(data):
        rows = islice(hub_rows(data, config, split), limit)
        return [(f"{data}[{split}] row {i}", dict(record)) for i, record in enumerate(rows)], folder
    raise TheWorldUserError(f"{data}: no such file or folder (and it is not a Hub id such as 'owner/name')")


# ---------------------------------------------------------------------------- field helpers


def _require(row: dict[str, Any], key: str, where: str) -> Any:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise TheWorldUserError(f"{where}: missing field {key!r}")
    return value


def _literal(value: Any, key: str, where: str) -> Any:
    """A field that some exports store as a string-serialised Python literal (never `eval`)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise TheWorldUserError(f"{where}: field {key!r} is not a readable literal: {value[:80]!r}") from err


def _open_rgb(visual: Image.Image | str, where: str) -> Image.Image:
    if isinstance(visual, Image.Image):
        return visual.convert("RGB")
    try:
        with Image.open(visual) as image:
            return image.convert("RGB")
    except OSError as err:
        raise TheWorldUserError(f"{where}: cannot read image {visual} ({err})") from err


def _check_unique(items: list[EvalItem], where: str) -> list[EvalItem]:
    """Paired comparisons match items by id, so ids must be unique within a benchmark."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise TheWorldUserError(f"{where}: duplicate item id {item.id!r}")
        seen.add(item.id)
    return items


# ---------------------------------------------------------------------------- BLINK

_LETTER_RE = re.compile(r"\(?\s*([A-Za-z])\s*\)?")
_BLINK_IMAGES = ("image_1", "image_2", "image_3", "image_4")


def _blink_answer(raw: Any, choices: list[str], where: str) -> str | None:
    """ "(A)" -> choices[0]; a missing answer (hidden test split) -> None."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    match = _LETTER_RE.fullmatch(str(raw).strip())
    index = ord(match.group(1).upper()) - ord("A") if match else -1
    if not 0 <= index < len(choices):
        raise TheWorldUserError(f"{where}: answer {raw!r} does not name one of {len(choices)} choices")
    return choices[index]


def _present(value: Any) -> bool:
    """Unused BLINK image slots are null, or in some exports a {"bytes": None, "path": None}."""
    return bool(value.get("bytes") or value.get("path")) if isinstance(value, dict) else value is not None


def _load_blink(
    task: str, name: str, data: str, image_folder: str | None = None, split: str | None = None, limit: int | None = None
) -> list[EvalItem]:
    """A BLINK task (`BLINK-Benchmark/BLINK`, split `val` by default); answers "(A)" become the choice text."""
    rows, folder = read_rows(data, task, split or "val", limit, image_folder)
    items = []
    for where, row in rows:
        choices = _literal(_require(row, "choices", where), "choices", where)
        if not isinstance(choices, list) or not choices:
            raise TheWorldUserError(f"{where}: 'choices' must be a non-empty list")
        choices = [str(c) for c in choices]
        visuals = [resolve_visual(row[k], folder, where, bad_visual="raise") for k in _BLINK_IMAGES if _present(row.get(k))]
        if not visuals:
            raise TheWorldUserError(f"{where}: no image in image_1..image_4")
        item_id, question = str(_require(row, "idx", where)), str(_require(row, "question", where))
        answer = _blink_answer(row.get("answer"), choices, where)
        meta = {"benchmark": name, "task": task, "answer_letter": row.get("answer"), "prompt": row.get("prompt")}
        items.append(EvalItem(item_id, question, choices, answer, visuals, str(row.get("sub_task") or task), "choice", meta))
    return _check_unique(items, data)


load_blink_relative_depth = functools.partial(_load_blink, "Relative_Depth", "blink-relative-depth")
load_blink_spatial_relation = functools.partial(_load_blink, "Spatial_Relation", "blink-spatial-relation")


# ---------------------------------------------------------------------------- VSR

def load_vsr(
    data: str, image_folder: str | None = None, split: str | None = None, limit: int | None = None
) -> list[EvalItem]:
    """VSR (split `test`): captions become true/false questions; rows have no id, so it is row index and image name."""
    rows, folder = read_rows(data, None, split or "test", limit, image_folder)
    items = []
    for index, (where, row) in enumerate(rows):
        visual, question, answer = read_vsr(row, where, folder, bad_visual="raise")
        image = row["image"]
        item_id = f"{index:05d}-{Path(image).stem if isinstance(image, str) else 'image'}"
        meta = {"benchmark": "vsr", "subj": row.get("subj"), "obj": row.get("obj"), "image": image}
        items.append(EvalItem(item_id, question, list(VSR_CHOICES), answer, [visual], row.get("relation"), "choice", meta))
    return _check_unique(items, data)


# ---------------------------------------------------------------------------- SpatialRGPT-Bench

_REGION_NAME_RE = re.compile(r"Region \[(\d+)\]")
_TWO_REGION_CHOICE_RE = re.compile(r"Region \[\d+\],? or Region \[\d+\]")


def draw_region_boxes(image: Image.Image, boxes: Sequence[Sequence[float]]) -> Image.Image:
    """`image` with box k drawn and numbered k as training's OpenSpatial boxes are, then shrunk to `MAX_DRAWN_SIDE`."""
    out = draw_boxes(image, [list(box) for box in boxes])
    if max(out.size) > MAX_DRAWN_SIDE:
        out.thumbnail((MAX_DRAWN_SIDE, MAX_DRAWN_SIDE), Image.Resampling.LANCZOS)
    return out


def _boxes(value: Any, where: str) -> list[list[float]]:
    boxes = _literal(value if value is not None else [], "bbox", where)
    if not isinstance(boxes, (list, tuple)) or not all(
        isinstance(b, (list, tuple)) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b) for b in boxes
    ):
        raise TheWorldUserError(f"{where}: 'bbox' must be a list of [x1, y1, x2, y2] boxes")
    return [[float(v) for v in b] for b in boxes]


def _srgpt_texts(row: dict[str, Any], where: str) -> tuple[str, str]:
    """The question (first human turn, else text_q) and the reference answer (first gpt turn)."""
    turns = _literal(_require(row, "conversations", where), "conversations", where)
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) and "value" in t for t in turns):
        raise TheWorldUserError(f"{where}: 'conversations' must hold a question turn and an answer turn")
    question = str(turns[0]["value"] or row.get("text_q") or "")
    question = re.sub(r"<image>\s*", "", question).strip()
    return question, str(turns[1]["value"]).strip()


def _srgpt_scoring(
    qa_type: str, category: str, question: str, answer: str, where: str
) -> tuple[str, list[str] | None, str, dict[str, Any]]:
    """(kind, choices, answer, extra meta) from the benchmark's type and category (docs/data-formats.md)."""
    if "direction" in category or qa_type == "quantitative":
        clock = "direction" in category
        kind, key, missing = ("clock", "answer_hour", "clock hour") if clock else ("numeric", "answer_m", "quantity")
        value = parse_clock(answer) if clock else parse_quantity(answer)
        if value is not None:
            return kind, None, answer, {key: value}
        return "qualitative_free", None, answer, {"scoring_note": f"no {missing} in the reference answer"}
    if qa_type != "qualitative":
        raise TheWorldUserError(f"{where}: qa_info.type must be qualitative or quantitative, got {qa_type!r}")
    names = list(dict.fromkeys(f"Region [{k}]" for k in _REGION_NAME_RE.findall(question)))
    if len(names) >= 2 and (category.endswith("_choice") or _TWO_REGION_CHOICE_RE.search(question)):
        named = [n for n in names if n in answer]
        if len(named) == 1:
            return "choice", names, named[0], {}
    return "qualitative_free", None, answer, {}


def load_spatialrgpt_bench(
    data: str, image_folder: str | None = None, split: str | None = None, limit: int | None = None
) -> list[EvalItem]:
    """SpatialRGPT-Bench (split `val`): masks become "Region [k]", box k drawn and numbered k on the image."""
    rows, folder = read_rows(data, None, split or "val", limit, image_folder)
    items, fallbacks = [], 0
    for index, (where, row) in enumerate(rows):
        question, answer = _srgpt_texts(row, where)
        question, n_masks = name_regions(question)
        answer, _ = name_regions(answer)
        boxes = _boxes(row.get("bbox"), where)
        used = [int(k) for k in _REGION_NAME_RE.findall(question)]
        if max(used, default=-1) >= len(boxes) or n_masks > len(boxes):
            raise TheWorldUserError(f"{where}: the question names more regions than bbox has ({len(boxes)})")
        if row.get("image") is not None:
            source: Any = row["image"]
        else:
            info = _literal(_require(row, "image_info", where), "image_info", where)
            if not isinstance(info, dict) or not info.get("file_path"):
                raise TheWorldUserError(f"{where}: no embedded image and no image_info.file_path")
            source = str(info["file_path"])
        image = draw_region_boxes(_open_rgb(resolve_visual(source, folder, where, bad_visual="raise"), where), boxes)
        qa_info = _literal(_require(row, "qa_info", where), "qa_info", where)
        if not isinstance(qa_info, dict):
            raise TheWorldUserError(f"{where}: 'qa_info' must be a dict with type and category")
        qa_type = str(qa_info.get("type", "")).strip().lower()
        category = str(qa_info.get("category") or "").strip()
        kind, choices, target, extra = _srgpt_scoring(qa_type, category, question, answer, where)
        fallbacks += "scoring_note" in extra
        meta = {"benchmark": "spatialrgpt-bench", "qa_type": qa_type, "answer_text": answer, "bbox": boxes}
        meta.update({"text_q": row.get("text_q"), **extra})
        item_id = str(row.get("id") if row.get("id") is not None else index)
        item = EvalItem(item_id, question, choices, target, [image], category or None, kind, meta)  # type: ignore[arg-type]
        items.append(item)
    if fallbacks:
        logger.warning("%s: %d metric/direction answers had no readable value; judged as free text", data, fallbacks)
    return _check_unique(items, data)


# ---------------------------------------------------------------------------- generic JSONL


def load_jsonl(
    data: str, image_folder: str | None = None, split: str | None = None, limit: int | None = None
) -> list[EvalItem]:
    """The generic QA format (`theworld.data.qa.read_qa`); `split` only picks a file when `data` is a folder."""
    rows, folder = read_rows(data, None, split, limit, image_folder)
    items = []
    for where, row in rows:
        choices, visuals = read_qa(row, where, folder, bad_visual="raise")
        answer = row.get("answer")
        item_id, question = str(_require(row, "id", where)), str(_require(row, "question", where))
        kind = row.get("kind") or ("choice" if choices else "qualitative_free")
        meta = {"benchmark": "jsonl", "source": where}
        answer = None if answer is None else str(answer)
        items.append(EvalItem(item_id, question, choices or None, answer, visuals, row.get("category"), kind, meta))
    return _check_unique(items, data)


BENCHMARKS: dict[str, Callable[..., list[EvalItem]]] = {
    "blink-relative-depth": load_blink_relative_depth,
    "blink-spatial-relation": load_blink_spatial_relation,
    "vsr": load_vsr,
    "spatialrgpt-bench": load_spatialrgpt_bench,
    "jsonl": load_jsonl,
}


def load_benchmark(
    name: str, data: str, image_folder: str | None = None, split: str | None = None, limit: int | None = None
) -> list[EvalItem]:
    """Dispatch to the registered loader; an unknown name is a user error listing the known ones."""
    if name not in BENCHMARKS:
        raise TheWorldUserError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    items = BENCHMARKS[name](data, image_folder=image_folder, split=split, limit=limit)
    logger.info("loaded %d items of %s from %s", len(items), name, data)
    return items
