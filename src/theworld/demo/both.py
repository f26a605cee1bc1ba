"""`theworld demo` (what `make demo` runs): the direction/approach task and the forecast task, side by side.

The two tasks share nothing but the machine: each runs in its own process on one torch thread
(`workers.run_jobs`), so each gives the numbers it gives alone, and the two cores of the
project's machines finish both in about the time of the longer one. Layout of the output folder:
the direction/approach task's files at its top (results.json, report.md, demo.png, as before),
the forecast task's under `forecast/`; `demo_timings.json` records both tasks' wall and CPU time.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from theworld.demo.forecast import ForecastDemoConfig, run_forecast_demo
from theworld.demo.pipeline import DemoConfig, run_motion_task
from theworld.demo.workers import fresh_output_dir, run_jobs

MOTION_TASK = "direction/approach task"
FORECAST_TASK = "forecast task"


def run_both_tasks(config: DemoConfig, forecast: ForecastDemoConfig, workers: int = 2) -> dict[str, Any]:
    """Both tasks in config.output_dir (forecast's in its `forecast/` folder); task name -> its results."""
    out = fresh_output_dir(config.output_dir, "--output-dir", config.threads)
    forecast = replace(forecast, output_dir=str(out / "forecast"))
    start = time.time()
    done = run_jobs({MOTION_TASK: (run_motion_task, (config,)), FORECAST_TASK: (run_forecast_demo, (forecast,))}, workers)
    timings = {
        "workers": workers,
        "wall_time_s": round(time.time() - start, 1),
        "tasks": {name: {"wall_s": job["wall_s"], "cpu_s": job["cpu_s"], "steps_wall_s": job["result"]["timings_s"],
                         "steps_cpu_s": job["result"]["cpu_s"]} for name, job in done.items()},
    }  # fmt: skip
    (out / "demo_timings.json").write_text(json.dumps(timings, indent=2))
    with (out / "report.md").open("a", encoding="utf-8") as report:
        report.write(f"\nThe forecast task's report: [forecast/report.md](forecast/report.md). Both tasks ran side by "
                     f"side in {timings['wall_time_s']} s ({workers} worker processes, see demo_timings.json).\n")  # fmt: skip
    return {"timings": timings, **{name: job["result"] for name, job in done.items()}}


def load_forecast_config(path: str | None, seed: int, threads: int | None) -> ForecastDemoConfig:
    """The forecast task's settings: its defaults, then the fields a JSON file sets (unknown keys are refused)."""
    from theworld.errors import TheWorldUserError

    values: dict[str, Any] = {"seed": seed, "threads": threads}
    if path is not None:
        file = Path(path)
        try:
            given = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TheWorldUserError(f"--forecast-config {file}: {err}") from None
        known = set(ForecastDemoConfig.__dataclass_fields__) - {"output_dir"}
        unknown = sorted(set(given) - known) if isinstance(given, dict) else ["(not a JSON object)"]
        if unknown:
            raise TheWorldUserError(f"--forecast-config {file}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values.update(given)
    return ForecastDemoConfig(**values)
