"""The demo's world model (forecast task): its held-out prediction error against baselines, and its CPU cost.

Runs `theworld.world_model.forecast_study.run_forecast_study` (data -> tiny VAE trained on the
world's frames -> clips encoded -> tiny DiT trained from scratch with `train-world-model`'s
machinery -> rollouts -> errors beside copy-last, mean-future and ridge) at one budget and
prints the table: mean squared error of the imagined future latents on all held-out clips and on
those where a ball bounces after the clip ends, each with a bootstrap 95% interval, the paired
interval of (world model - baseline), and the wall and CPU seconds of every step.

    .venv/bin/python benchmarks/world_model_forecast.py                      # the default budget
    .venv/bin/python benchmarks/world_model_forecast.py --dit-steps 300 --n-unlabelled 600
    .venv/bin/python benchmarks/world_model_forecast.py --eval-split validation   # choosing settings

One torch thread by default (`--threads`): measure the compute, not the machine's other load; the
CPU seconds are the figure to read on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, machine_description, write_json  # noqa: E402

from theworld.world_model.forecast_study import ForecastStudyConfig, run_forecast_study  # noqa: E402


def error_table(errors: dict[str, Any]) -> str:
    lines = ["| clips | n | world model | copy-last | mean-future | ridge | world model beats all three |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for part in ("all", "bounce"):
        if part not in errors:
            continue
        e = errors[part]

        def cell(name: str) -> str:
            m = e["mse"][name]
            text = f"{m['mean']:.4f} [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]"
            if name != "world_model":
                vs = e["vs"][name]
                text += f"<br>Δ {vs['diff']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]"
            return text

        verdict = "yes" if all(v["better"] for v in e["vs"].values()) else "no"
        label = "held-out, all" if part == "all" else "held-out, ball bounces after the clip"
        lines.append(f"| {label} | {e['n']} | {cell('world_model')} | {cell('copy_last')} | {cell('mean_future')} "
                     f"| {cell('ridge')} | {verdict} |")  # fmt: skip
    return "\n".join(lines)


def timing_table(timings: dict[str, dict[str, float]], total: dict[str, float]) -> str:
    lines = ["| step | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {name} | {t['wall_s']:.1f} | {t['cpu_s']:.1f} |" for name, t in timings.items()]
    lines.append(f"| total | {total['wall_s']:.1f} | {total['cpu_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = ForecastStudyConfig()
    for f in dataclasses.fields(ForecastStudyConfig):
        if f.name in ("extra",):
            continue
        default = getattr(defaults, f.name)
        kind = type(default) if default is not None else int
        if f.name == "vae_crop":
            kind = int
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=default)
    parser.add_argument("--json", default=None)
    args = vars(parser.parse_args(argv))
    json_path = args.pop("json")
    config = ForecastStudyConfig(**args)
    results = run_forecast_study(config)
    print(f"World model for the forecast task ({config.output_dir}); Δ = world model - baseline, negative is better")
    print(error_table(results["errors"]))
    print(timing_table(results["timings"], results["total"]))
    env = results["environment"]
    print(f"torch threads {env['torch_threads']}, load average before/after {env['loadavg_before']} / {env['loadavg_after']}")
    print(f"command: {command_line()}")
    write_json(json_path, {**results, "machine": machine_description()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

