"""The demo's forecast task (part of `theworld demo` / `make demo`; alone: `theworld demo --forecast`):
does imagining the future help a question about the future? Measured numbers: docs/rollout.md.

Steps, through the code a user runs:

1. the world model for the forecast world (`world_model.forecast_study`): its tiny VAE's latent
   statistics set on the world's frames, a tiny DiT post-trained on unlabelled clips;
2. labelled clips (`data.forecast`): a train split and a held-out split, observed frames only;
3. three systems, same data, steps and learning rate (align, then finetune):
   `theworld` (observed latents only), `theworld_rollout` (K imagined latent frames from the DiT,
   rolled out once by `theworld cache-latents`), `theworld_oracle_future` (the same K > 0 model
   given the true future latents in place of imagined ones: the ceiling);
4. held-out accuracy with 95% CIs, and paired bootstrap CIs / McNemar tests between systems.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

FORECAST_SYSTEMS = ("theworld", "theworld_rollout", "theworld_oracle_future")
COMPARISONS = (("theworld_rollout", "theworld"), ("theworld_oracle_future", "theworld"), ("theworld_oracle_future", "theworld_rollout"))
# The labelled train clips' seed stream: apart from the unlabelled clips (seed), the held-out split
# (`synthetic.heldout_seed`: +1_000_003) and the study's validation split (+2_000_003).
LABELLED_SEED_OFFSET = 3_000_017
# The picture shows the first held-out clip of each of these (family, answer) kinds.
PICTURE_CLIPS = (("bounce", "yes"), ("bounce", "no"), ("collision", "yes"), ("exit", "right"))


@dataclass
class ForecastDemoConfig:
    output_dir: str = "runs/demo_forecast"
    seed: int = 0
    n_unlabelled: int = 600
    n_train: int = 300
    """Labelled clips (a multiple of 6: 3 tasks x 2 answers)."""
    n_heldout: int = 240
    vae_steps: int = 0
    """Steps training the VAE to reconstruct the world's frames before anything is encoded (0: untrained)."""
    dit_steps: int = 400
    rollout_steps: int = 10
    total_steps: int = 600
    align_fraction: float = 0.25
    batch_size: int = 16
    learning_rate: float = 1e-3
    world_tokens_per_frame: int = 16
    n_boot: int = 2000
    threads: int | None = 1
    eval_split: str = "heldout"
    """"heldout" (report) or "validation" (choose settings: the study's validation seed stream)."""
    workers: int = 2
    """Processes training and evaluating the systems side by side, one torch thread each (1: in turn, here)."""
    picture_decoder_steps: int = 300
    """Steps training the VAE's decoder for the picture (0: no picture); the encoder stays frozen."""
    systems: tuple[str, ...] = FORECAST_SYSTEMS
    """Which systems to train and evaluate (all three for a report; fewer to search settings cheaply)."""

    def __post_init__(self) -> None:
        self.systems = tuple(self.systems)
        if self.eval_split not in ("heldout", "validation"):
            raise TheWorldUserError(f"forecast demo: eval_split must be 'heldout' or 'validation', got {self.eval_split!r}")
        unknown = [s for s in self.systems if s not in FORECAST_SYSTEMS]
        if not self.systems or unknown:
            raise TheWorldUserError(f"forecast demo: systems must be from {', '.join(FORECAST_SYSTEMS)}, got {self.systems}")
        for name in ("n_unlabelled", "n_train", "n_heldout", "dit_steps", "batch_size", "n_boot", "workers"):
            if getattr(self, name) < 1:
                raise TheWorldUserError(f"forecast demo: {name} must be positive, got {getattr(self, name)}")
        for name in ("n_train", "n_heldout"):
            if getattr(self, name) % 6:
                raise TheWorldUserError(f"forecast demo: {name} must be a multiple of 6 (3 tasks x 2 answers)")
        if self.total_steps < 2 or not 0 <= self.align_fraction < 1:
            raise TheWorldUserError("forecast demo: total_steps must be >= 2 and align_fraction in [0, 1)")
        if self.rollout_steps < 2:
            raise TheWorldUserError("forecast demo: rollout_steps must be >= 2")
        if self.vae_steps < 0:
            raise TheWorldUserError(f"forecast demo: vae_steps must be >= 0, got {self.vae_steps}")

    @property
    def align_steps(self) -> int:
        return min(self.total_steps - 1, int(round(self.total_steps * self.align_fraction)))


def build_world_model(config: ForecastDemoConfig, out: Path) -> tuple[str, Any, dict[str, Any]]:
    """The forecast world's Cosmos repo with a DiT post-trained on unlabelled clips; (repo, study config, facts)."""
    from theworld.world_model.forecast_study import (
        ForecastStudyConfig, build_vae_repo, clips_uint8, encode, make_data, train_dit,
    )  # fmt: skip

    study = ForecastStudyConfig(
        output_dir=str(out), seed=config.seed, n_unlabelled=config.n_unlabelled, n_eval=6,
        dit_steps=config.dit_steps, rollout_steps=config.rollout_steps, threads=config.threads, vae_steps=config.vae_steps,
    )  # fmt: skip
    unlabelled, _ = make_data(study)
    pixels = clips_uint8(unlabelled)
    vae = build_vae_repo(study, pixels, out)
    latents = encode(Path(vae["repo"]), pixels, [c.id for c in unlabelled])
    dit = train_dit(study, Path(vae["repo"]), latents, out)
    facts = {"vae_loss_first10": vae["loss_first10"], "vae_loss_last10": vae["loss_last10"]}  # None: untrained
    return dit["repo"], study, {**facts, "dit_parameters": dit["parameters"], "dit_loss_curve": dit["loss_curve"]}


def write_labelled(config: ForecastDemoConfig, study: Any, out: Path) -> tuple[Path, Path, list[Any]]:
    """Train and held-out QA splits (observed frames as PNGs); returns the files and every clip."""
    from theworld.data.forecast import ForecastConfig, generate_forecast
    from theworld.data.synthetic import heldout_seed, write_split
    from theworld.world_model.forecast_study import VALIDATION_SEED_OFFSET

    world = ForecastConfig(image_size=study.image_size, observed_frames=study.observed_frames, future_frames=study.future_frames)
    train = generate_forecast(config.n_train, seed=config.seed + LABELLED_SEED_OFFSET, config=world, split="train")
    if config.eval_split == "heldout":
        eval_seed = heldout_seed(config.seed)
    else:
        eval_seed = config.seed + VALIDATION_SEED_OFFSET
    heldout = generate_forecast(config.n_heldout, seed=eval_seed, config=world, split=config.eval_split)
    data = out / "data"
    train_file, heldout_file = write_split(train, data, "train"), write_split(heldout, data, config.eval_split)
    return Path(train_file), Path(heldout_file), train + heldout


def true_futures(repo: str, study: Any, clips: list[Any]) -> dict[str, torch.Tensor]:
    """Sample id -> (16, K, h, w): the posterior mean of the whole clip's last K latent frames."""
    from theworld.world_model.forecast_study import clips_uint8, encode

    latents = encode(Path(repo), clips_uint8(clips), [c.id for c in clips])
    observed = 1 + (study.observed_frames - 1) // 4
    return {clip_id: latents.mean[i, :, observed : observed + study.rollout_frames] for i, clip_id in enumerate(latents.ids)}


def _values(config: ForecastDemoConfig, gemma: str, repo: str, train_file: Path, heldout: Path, out: Path, study: Any,
            rollout: bool, **values: Any) -> dict[str, Any]:  # fmt: skip
    from theworld.demo.pipeline import DemoConfig, train_values

    demo = DemoConfig(image_size=study.image_size, world_image_size=study.image_size,
                      world_tokens_per_frame=config.world_tokens_per_frame,
                      num_frames=study.observed_frames, batch_size=config.batch_size, learning_rate=config.learning_rate,
                      seed=config.seed, total_steps=config.total_steps, n_train=12, n_heldout=12)  # fmt: skip
    rollouts = dict(
        world_rollout_frames=study.rollout_frames, world_rollout_steps=config.rollout_steps, world_rollout_guidance=1.0,
        world_rollout_seed=config.seed, world_rollout_prompt=study.prompt,
        world_rollout_max_sequence_length=study.max_sequence_length,
    ) if rollout else {}  # fmt: skip
    return train_values(
        demo, model_name_or_path=gemma, cosmos_model_name=repo, train_data=str(train_file), train_data_format="qa",
        eval_data=str(heldout), eval_data_format="qa", enable_world=True, latent_cache_dir=str(out / "latent_cache"),
        output_dir=str(out / "runs" / "caching"),  # each run sets its own; cache-latents' config needs one
        **rollouts, **values,
    )  # fmt: skip


def _train_two_stages(config: ForecastDemoConfig, values: dict[str, Any], name: str, runs: Path) -> str:
    """align then finetune on the same budget as every system; returns the final model folder."""
    from theworld.training.config import build_config
    from theworld.training.run import train

    source = values["model_name_or_path"]
    no_eval = {k: v for k, v in values.items() if not k.startswith("eval_data")}
    if config.align_steps > 0:
        align = build_config(dict(no_eval, stage="align", max_steps=config.align_steps, output_dir=str(runs / f"{name}_align")))
        source = train(align).output_dir
    finetune = build_config(dict(no_eval, model_name_or_path=source, stage="finetune",
                                 max_steps=config.total_steps - config.align_steps, output_dir=str(runs / name)))  # fmt: skip
    return train(finetune).output_dir


def _cache_latents(values: dict[str, Any], out: Path, name: str) -> None:
    from theworld.cli.main import main

    path = out / f"cache_config_{name}.json"
    path.write_text(json.dumps(values, indent=2))
    if main(["cache-latents", "--config", str(path), "--no-progress", "--world-safety-checker", "tiny-test-double"]):
        raise TheWorldUserError(f"cache-latents failed for {name}; see the log above")


def build_oracle_cache(values: dict[str, Any], futures: dict[str, torch.Tensor]) -> Any:
    """The rollout system's rollout cache identity, in the oracle's own folder, holding true futures."""
    from theworld.training.config import build_config
    from theworld.training.dataset import load_datasets
    from theworld.training.latent_cache import open_for_training
    from theworld.training.run import open_rollout_cache
    from theworld.training.sources import resolve_model
    from theworld.world_model.rollout_cache import RolloutCache

    oracle_dir = values["rollout_cache_dir"]
    config = build_config({k: v for k, v in values.items() if k != "rollout_cache_dir"})
    latent_cache = open_for_training(config)
    imagined = open_rollout_cache(config, resolve_model(config).config, latent_cache)  # the DiT's cache: its identity
    oracle = RolloutCache(oracle_dir, latent_cache.settings, imagined.identity, pixel_key=latent_cache.key_for,
                          text_condition=imagined.text_condition)  # fmt: skip
    imagined.text_condition.save_for_prompt(oracle_dir)
    items = [(visual, futures[sample.id]) for dataset in load_datasets(config) if dataset is not None
             for sample in dataset.samples for visual in sample.visuals()]  # fmt: skip
    oracle.store(items)
    return oracle


def run_forecast_demo(config: ForecastDemoConfig) -> dict[str, Any]:
    """Every step; writes results.json and report.md in output_dir and returns the results."""
    from theworld.demo.workers import fresh_output_dir, run_jobs
    from theworld.evaluation.compare import compare_pair, load_run
    from theworld.testing.tiny import make_tiny_gemma
    from theworld.world_model.forecast_study import clips_uint8

    out = fresh_output_dir(config.output_dir, "--output-dir", config.threads)
    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}  # this process's CPU seconds per step (the machine may be shared)
    start = lap = time.time()
    cpu_lap = time.process_time()

    def mark(name: str) -> None:
        nonlocal lap, cpu_lap
        timings[name] = round(time.time() - lap, 1)
        cpu_timings[name] = round(time.process_time() - cpu_lap, 1)
        lap, cpu_lap = time.time(), time.process_time()

    repo, study, world_facts = build_world_model(config, out)
    gemma = str(make_tiny_gemma(out / "models" / "gemma"))
    mark("world model (VAE statistics, DiT post-training)")
    train_file, heldout_file, labelled = write_labelled(config, study, out)
    futures = true_futures(repo, study, labelled)
    mark("labelled data and true futures")

    runs = out / "runs"
    plain = _values(config, gemma, repo, train_file, heldout_file, out, study, rollout=False)
    rollout = _values(config, gemma, repo, train_file, heldout_file, out, study, rollout=True)
    oracle = dict(rollout, rollout_cache_dir=str(out / "oracle_future"))
    _cache_latents(rollout, out, "rollout")  # observed latents for all three, and the DiT's rollouts
    oracle_cache = build_oracle_cache(oracle, futures)
    oracle_check = check_oracle(oracle_cache, rollout, futures)
    mark("latent, rollout and oracle caches")
    values = {"theworld": plain, "theworld_rollout": rollout, "theworld_oracle_future": oracle}
    jobs = {system: (train_and_evaluate, (config, values[system], system, str(heldout_file), str(out)))
            for system in config.systems}  # fmt: skip
    if config.picture_decoder_steps > 0:  # independent of the systems: it runs beside them
        eval_clips = labelled[config.n_train :]
        chosen = [next(c for c in eval_clips if (c.category, c.answer) == kind) for kind in PICTURE_CLIPS
                  if any((c.category, c.answer) == kind for c in eval_clips)]  # fmt: skip
        train_pixels = clips_uint8(labelled[: min(config.n_train, 96)])
        jobs["picture"] = (write_forecast_picture, (config, repo, study, rollout, train_pixels, chosen, out / "forecast.png"))
    done = run_jobs(jobs, config.workers)
    metrics = {system: done[system]["result"]["metrics"] for system in config.systems}
    timings_name = f"training and evaluation ({len(metrics)} systems), picture; {min(config.workers, len(jobs))} worker processes"
    mark(timings_name)
    cpu_timings[timings_name] = round(cpu_timings[timings_name] + sum(job["cpu_s"] for job in done.values()), 1)
    paired = {}
    for system, reference in COMPARISONS:
        if system not in metrics or reference not in metrics:
            continue
        pair = compare_pair(load_run(out / "eval" / system), load_run(out / "eval" / reference), n_boot=config.n_boot, seed=config.seed)
        if pair is not None:
            paired[f"{system}_vs_{reference}"] = {"n": pair.n, "diff": pair.diff, "ci95": [pair.lo, pair.hi], "p_mcnemar": pair.p_mcnemar}
    results = {
        "systems": {s: {"accuracy": m["accuracy"], "ci95": m["ci95"], "n": m["n"], "per_category": m.get("per_category", {})}
                    for s, m in metrics.items()},
        "paired": paired,
        "world_model": world_facts,
        "picture": done["picture"]["result"] if "picture" in done else None,
        "oracle": {**oracle_check, "items_looked_up": done["theworld_oracle_future"]["result"]["oracle_items"]
                   if "theworld_oracle_future" in done else 0},
        "jobs": {name: {"wall_s": job["wall_s"], "cpu_s": job["cpu_s"]} for name, job in done.items()},
        "config": asdict(config),
        "timings_s": timings,
        "cpu_s": cpu_timings,
        "wall_time_s": round(time.time() - start, 1),
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.md").write_text(render(results))
    return results


def write_forecast_picture(config: ForecastDemoConfig, repo: str, study: Any, rollout_values: dict[str, Any],
                           train_pixels: torch.Tensor, chosen: list[Any], path: Path) -> dict[str, Any]:  # fmt: skip
    """The PNG of observed vs imagined vs true future frames for the chosen evaluation clips, decoded
    by the demo's VAE (its decoder trained on `train_pixels` for this; see forecast_picture). A job
    for `run_jobs`: sets its own threads."""
    from theworld.demo.forecast_picture import write_picture
    from theworld.training.config import build_config
    from theworld.training.dataset import load_datasets
    from theworld.world_model.forecast_study import clips_uint8, encode

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    wanted = {c.id for c in chosen}
    cache = open_oracle_cache(rollout_values)  # the DiT's rollouts, as training read them
    imagined = {sample.id: cache.imagined_for(sample.visuals()[0])
                for dataset in load_datasets(build_config(rollout_values)) if dataset is not None
                for sample in dataset.samples if sample.id in wanted}  # fmt: skip
    latents = encode(Path(repo), clips_uint8(chosen), [c.id for c in chosen])
    observed = 1 + (study.observed_frames - 1) // 4
    return write_picture(
        Path(repo) / "vae", train_pixels, chosen, latents.mean[:, :, :observed],
        latents.mean[:, :, observed : observed + study.rollout_frames], torch.stack([imagined[c.id] for c in chosen]),
        path, config.picture_decoder_steps, config.seed,
    )  # fmt: skip


def train_and_evaluate(config: ForecastDemoConfig, values: dict[str, Any], system: str, heldout_file: str,
                       out: str) -> dict[str, Any]:  # fmt: skip
    """One system: align, finetune, held-out evaluation (a job for `run_jobs`: sets its own threads)."""
    from theworld.evaluation.benchmarks import load_jsonl
    from theworld.evaluation.harness import EvalSettings, evaluate
    from theworld.evaluation.loading import load_model
    from theworld.testing.tiny_world_model import TinyTestSafetyChecker

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    folder = _train_two_stages(config, values, system, Path(out) / "runs")
    checker = TinyTestSafetyChecker() if system != "theworld" else None
    model, processor = load_model(folder, "none", dtype="float32", device="cpu", safety_checker=checker)
    oracle = None
    if system == "theworld_oracle_future":  # the true future in place of the DiT's imagination
        model.imagine = oracle = OracleImagination(open_oracle_cache(values))
    settings = EvalSettings(control="none", batch_size=32, seed=config.seed, n_boot=config.n_boot)
    info = {"model": folder, "benchmark": "jsonl", "data": heldout_file, "system": system}
    metrics = evaluate(load_jsonl(heldout_file), model, processor, Path(out) / "eval" / system, settings, info=info)
    return {"folder": folder, "metrics": metrics, "oracle_items": oracle.items if oracle is not None else 0}


class OracleImagination:
    """Stands in for `TheWorld.imagine` in the oracle's evaluation: the true future latents of each
    item, looked up by its world pixels (a miss is an error, never a silent rollout)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.items = 0

    def __call__(self, pixels: torch.Tensor, *_: Any) -> torch.Tensor:
        self.items += len(pixels)
        return self.cache.imagined_for_pixels(pixels)


def check_oracle(oracle: Any, rollout_values: dict[str, Any], futures: dict[str, torch.Tensor]) -> dict[str, float]:
    """How far the oracle's cached latents are from the true futures (0 by construction), and from
    the DiT's imagined ones (what separates the two systems), over the training samples."""
    from theworld.training.config import build_config
    from theworld.training.dataset import load_datasets

    imagined = open_oracle_cache(rollout_values)
    to_truth, to_imagined = 0.0, []
    for dataset in load_datasets(build_config(rollout_values)):
        for sample in dataset.samples if dataset is not None else []:
            for visual in sample.visuals():
                stored = oracle.imagined_for(visual)
                to_truth = max(to_truth, float((stored - futures[sample.id]).abs().max()))
                to_imagined.append(float((stored - imagined.imagined_for(visual)).pow(2).mean()))
    return {"max_abs_oracle_minus_truth": to_truth, "mse_truth_vs_imagined": sum(to_imagined) / len(to_imagined)}


def open_oracle_cache(values: dict[str, Any]) -> Any:
    """The oracle's folder opened as training opens it (the rollout system's identity, true futures inside)."""
    from theworld.training.config import build_config
    from theworld.training.latent_cache import open_for_training
    from theworld.training.run import open_rollout_cache
    from theworld.training.sources import resolve_model

    config = build_config(values)
    return open_rollout_cache(config, resolve_model(config).config, open_for_training(config))


def render(results: dict[str, Any]) -> str:
    lines = ["# Forecast task", "", "| system | accuracy % | 95% CI | n |", "|---|---|---|---|"]
    for name, m in results["systems"].items():
        lo, hi = m["ci95"]
        lines.append(f"| {name} | {100 * m['accuracy']:.1f} | [{100 * lo:.1f}, {100 * hi:.1f}] | {m['n']} |")
    lines += ["", "| comparison | difference (points) | paired 95% CI | McNemar p |", "|---|---|---|---|"]
    for name, p in results["paired"].items():
        lines.append(f"| {name} | {100 * p['diff']:+.1f} | [{100 * p['ci95'][0]:+.1f}, {100 * p['ci95'][1]:+.1f}] | {p['p_mcnemar']:.3g} |")
    lines += ["", f"wall time {results['wall_time_s']} s; steps: {results['timings_s']}", ""]
    return "\n".join(lines)
