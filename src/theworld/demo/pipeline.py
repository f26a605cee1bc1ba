"""The demo: does the world path learn what a static VLM cannot? One command makes the tiny
checkpoints and the synthetic clips, caches latents, trains `gemma_control` and `theworld` on the
same budget and evaluates them beside `theworld_zero_world`, through the code a user runs
(steps in docs/demo.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from theworld.errors import ConfigFieldError, TheWorldUserError

logger = logging.getLogger(__name__)

SYSTEMS = ("gemma_control", "theworld", "theworld_zero_world")


class DemoConfigError(ConfigFieldError):
    """A bad `DemoConfig` field."""


@dataclass
class DemoConfig:
    """Everything that decides the demo's numbers; recorded in results.json."""

    output_dir: str = "runs/demo"
    seed: int = 0
    # models: None builds the tiny offline checkpoints
    model_name_or_path: str | None = None
    cosmos_model_name: str | None = None
    world_image_size: int = 64
    world_tokens_per_frame: int = 16
    bf16: bool = False
    # data
    tasks: tuple[str, ...] = ("direction", "approach")
    num_frames: int = 9
    image_size: int = 64
    n_train: int = 512
    n_heldout: int = 256
    # training budget, identical for both systems
    total_steps: int = 1200
    align_fraction: float = 0.25
    batch_size: int = 32
    learning_rate: float = 1e-3
    # evaluation
    eval_batch_size: int = 32
    n_boot: int = 2000
    threads: int | None = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every value is checked here, before anything is written; each error names its field."""
        from theworld.data.synthetic import SyntheticConfig, SyntheticConfigError, count_multiple

        self.tasks = tuple(self.tasks)
        if (self.model_name_or_path is None) != (self.cosmos_model_name is None):
            raise DemoConfigError("cosmos_model_name", "give both --model and --cosmos-model-name, or neither (tiny offline models)")
        try:
            synthetic = SyntheticConfig(
                image_size=self.image_size, num_frames=self.num_frames, tasks=self.tasks, seed=self.seed
            )
        except SyntheticConfigError as err:
            raise DemoConfigError(err.field_name, err.detail) from None
        multiple = count_multiple(synthetic)
        for name in ("n_train", "n_heldout"):
            count = getattr(self, name)
            if count <= 0 or count % multiple:
                raise DemoConfigError(
                    name, f"must be a positive multiple of {multiple} ({len(self.tasks)} task(s) x 2 answers), got {count}"
                )
        if self.total_steps < 2:
            raise DemoConfigError("total_steps", f"must be >= 2 (align and finetune share them), got {self.total_steps}")
        if not 0.0 <= self.align_fraction < 1.0 or self.align_steps >= self.total_steps:
            raise DemoConfigError(
                "align_fraction",
                f"must be in [0, 1) and leave finetune at least one of the {self.total_steps} steps, got {self.align_fraction}",
            )
        for name in ("batch_size", "eval_batch_size", "n_boot"):
            if getattr(self, name) < 1:
                raise DemoConfigError(name, f"must be positive, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise DemoConfigError("learning_rate", f"must be positive, got {self.learning_rate}")
        if self.threads is not None and self.threads < 1:
            raise DemoConfigError("threads", f"must be positive, got {self.threads}")
        self._check_world_settings()

    def _check_world_settings(self) -> None:
        """The model's own rule (`WorldGeometry.check`), reported as the field it names."""
        from theworld.model.configuration import WorldGeometry

        try:
            WorldGeometry(self.world_image_size, self.world_tokens_per_frame).check()
        except ValueError as err:
            name = "world_tokens_per_frame" if str(err).startswith("world_tokens_per_frame") else "world_image_size"
            raise DemoConfigError(name, str(err)) from None

    @property
    def align_steps(self) -> int:
        return int(round(self.total_steps * self.align_fraction))


def prepare_models(config: DemoConfig, out: Path) -> tuple[str, str]:
    """Real ids as given, else the tiny checkpoints written under out/models."""
    if config.model_name_or_path is not None:
        return config.model_name_or_path, config.cosmos_model_name  # type: ignore[return-value]
    from theworld.testing.tiny import make_tiny_gemma, make_tiny_vae

    gemma, cosmos = out / "models" / "gemma", out / "models" / "cosmos"
    make_tiny_gemma(gemma)
    make_tiny_vae(cosmos)
    return str(gemma), str(cosmos)


def prepare_data(config: DemoConfig, out: Path) -> tuple[Path, Path]:
    """Train and held-out splits in the generic QA JSONL format (frames as PNG files)."""
    from theworld.data.synthetic import SyntheticConfig, generate, heldout_seed, write_split

    synthetic = SyntheticConfig(image_size=config.image_size, num_frames=config.num_frames, tasks=tuple(config.tasks))
    data_dir = out / "data"
    train = write_split(generate(config.n_train, seed=config.seed, config=synthetic, split="train"), data_dir, "train")
    heldout = write_split(
        generate(config.n_heldout, seed=heldout_seed(config.seed), config=synthetic, split="heldout"), data_dir, "heldout"
    )
    return Path(train), Path(heldout)


def train_values(config: DemoConfig, **values: Any) -> dict[str, Any]:
    """The config keys of one run: the demo's shared budget and the given stage-specific values."""
    base = dict(
        train_data_format="qa",
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        save_steps=100_000,  # the demo keeps only final models
        seed=config.seed,
        bf16=config.bf16,
        world_image_size=config.world_image_size,
        world_tokens_per_frame=config.world_tokens_per_frame,
        world_num_frames=config.num_frames,
    )
    base.update(values)
    # Ten or more loss points per stage for the curves, at most one every 10 steps.
    base.setdefault("logging_steps", max(1, min(10, int(base.get("max_steps", 10)) // 10)))
    return base


def train_config(config: DemoConfig, **values: Any):
    """A validated `TrainConfig` from `train_values`."""
    from theworld.training.config import build_config

    return build_config(train_values(config, **values))


def build_latent_cache(values: dict[str, Any], heldout: Path) -> None:
    """Encode every train and held-out clip once (the `cache-latents` command on this run's config keys)."""
    from theworld.cli.main import main

    path = Path(values["output_dir"]).parent / "cache_config.json"
    path.write_text(json.dumps({**values, "eval_data": str(heldout), "eval_data_format": "qa"}, indent=2))
    code = main(["cache-latents", "--config", str(path)])
    if code:
        raise TheWorldUserError(f"cache-latents failed (exit {code}); see the log above")


def run_training(config: DemoConfig, gemma: str, cosmos: str, train_data: Path, heldout: Path, out: Path) -> dict[str, Any]:
    """Train both systems on the same data, steps and learning rate; returns their loss histories."""
    from theworld.training.run import train

    runs = out / "runs"
    cache_dir = str(out / "latent_cache")
    common = dict(model_name_or_path=gemma, cosmos_model_name=cosmos, train_data=str(train_data))
    histories: dict[str, Any] = {}

    control = train_config(config, **common, enable_world=False, stage="finetune", max_steps=config.total_steps,
                           output_dir=str(runs / "gemma_control"))
    histories["gemma_control"] = [_history(train(control), "finetune", 0)]

    align_values = train_values(config, **common, enable_world=True, stage="align", max_steps=config.align_steps,
                                output_dir=str(runs / "theworld_align"), latent_cache_dir=cache_dir)
    align = train_config(config, **align_values)
    build_latent_cache(align_values, heldout)
    stages = []
    source = gemma
    if config.align_steps > 0:
        stages.append(_history(train(align), "align", 0))
        source = align.output_dir
    finetune = train_config(config, **{**common, "model_name_or_path": source}, enable_world=True, stage="finetune",
                            max_steps=config.total_steps - config.align_steps,
                            output_dir=str(runs / "theworld"), latent_cache_dir=cache_dir)
    stages.append(_history(train(finetune), "finetune", config.align_steps))
    histories["theworld"] = stages
    return histories


def _history(result: Any, stage: str, offset: int) -> dict[str, Any]:
    """Loss per logged step, shifted so a later stage continues the earlier stage's step axis."""
    logs = result.trainer.state.log_history if result.trainer is not None else []
    points = [(offset + int(e["step"]), float(e["loss"])) for e in logs if "loss" in e and "step" in e]
    return {"stage": stage, "output_dir": result.output_dir, "steps": [s for s, _ in points], "loss": [v for _, v in points]}


def run_evaluation(config: DemoConfig, heldout: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Each system on the held-out clips; the eval harness checks that world runs saw world tokens."""
    from theworld.evaluation.benchmarks import load_jsonl
    from theworld.evaluation.harness import EvalSettings, evaluate
    from theworld.evaluation.loading import load_model

    items = load_jsonl(str(heldout))
    runs = out / "runs"
    plan = {
        "gemma_control": (runs / "gemma_control", "world-off"),
        "theworld": (runs / "theworld", "none"),
        "theworld_zero_world": (runs / "theworld", "zero-world"),
    }
    metrics: dict[str, dict[str, Any]] = {}
    for system, (path, control) in plan.items():
        model, processor = load_model(str(path), control=control, dtype="float32", device="cpu")
        settings = EvalSettings(control=control, batch_size=config.eval_batch_size, seed=config.seed, n_boot=config.n_boot)
        info = {"model": str(path), "benchmark": "jsonl", "data": str(heldout), "system": system}
        metrics[system] = evaluate(items, model, processor, out / "eval" / system, settings, info=info)
        del model
    return metrics


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """The direction/approach task alone in a fresh output folder; returns what results.json holds."""
    from theworld.demo.workers import fresh_output_dir

    fresh_output_dir(config.output_dir, "--output-dir", config.threads)
    return run_motion_task(config)


def run_motion_task(config: DemoConfig) -> dict[str, Any]:
    """Every step of the direction/approach task in config.output_dir (an empty folder that exists),
    and the report; returns the results dict written to results.json. Runs in a worker process
    when `theworld demo` runs both tasks: it sets its own thread count."""
    from theworld.demo.report import paired_differences, write_report

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    start = time.time()
    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}  # this process's CPU seconds per step (the machine may be shared)
    cpu = [time.process_time()]

    def lap(name: str, begun: float) -> float:
        timings[name] = round(time.time() - begun, 1)
        cpu_timings[name] = round(time.process_time() - cpu[0], 1)
        cpu[0] = time.process_time()
        return time.time()

    t = time.time()
    gemma, cosmos = prepare_models(config, out)
    t = lap("models", t)
    train_data, heldout = prepare_data(config, out)
    t = lap("data", t)
    histories = run_training(config, gemma, cosmos, train_data, heldout, out)
    t = lap("training (incl. latent cache)", t)
    metrics = run_evaluation(config, heldout, out)
    t = lap("evaluation", t)

    results = {
        "systems": {
            name: {"accuracy": m["accuracy"], "ci95": m["ci95"], "n": m["n"], "per_category": m.get("per_category", {})}
            for name, m in metrics.items()
        },
        "paired": paired_differences(out / "eval", n_boot=config.n_boot, seed=config.seed),
        "training": histories,
        "config": {**asdict(config), "tasks": list(config.tasks), "models": {"gemma": gemma, "cosmos": cosmos}},
        "timings_s": timings,
        "cpu_s": cpu_timings,
        "wall_time_s": round(time.time() - start, 1),
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
    }
    write_report(results, out)
    return results
