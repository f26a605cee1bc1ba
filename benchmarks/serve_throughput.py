"""Server throughput: requests/s with batching vs one request at a time, 8 concurrent clients.

Target: >= 2x. The script saves a tiny TheWorld (random weights, the test tokenizer and VAE) and
starts two `theworld serve` processes for it on 127.0.0.1: one that batches up to `--batch-size`
requests per `generate`, one with batches of 1. Each round, the same
`--clients` client threads send `--requests` chat requests each (images and clips of two lengths,
greedy, `--max-tokens` tokens) to one server, then to the other (order alternating per round);
the figure is the median over rounds of (batched requests/s) / (one-at-a-time requests/s), wall
clock. Both servers answer every request identically (checked), so only the scheduling differs.

    .venv/bin/python benchmarks/serve_throughput.py
    .venv/bin/python benchmarks/serve_throughput.py --size small --rounds 5
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import REPO_ROOT, command_line  # noqa: E402

SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2),  # the test suite's model
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, head_dim=64,
                  layer_types=["sliding_attention", "full_attention"] * 2),
}


def build_model(root: Path, size: str) -> Path:
    """A saved TheWorld folder (weights, world encoder, processor), as training leaves one."""
    from theworld import TheWorld, TheWorldProcessor
    from theworld.testing.tiny import TINY_WORLD_SETTINGS, TinyGemmaSpec, make_tiny_gemma, make_tiny_vae

    gemma = make_tiny_gemma(root / "gemma", TinyGemmaSpec(**SIZES[size]))
    vae = make_tiny_vae(root / "vae")
    model = TheWorld.from_pretrained(str(gemma), cosmos_model_name=str(vae), **TINY_WORLD_SETTINGS)
    model.save_pretrained(root / "model")
    TheWorldProcessor.from_model_config(str(gemma), model.config).save_pretrained(root / "model")
    return root / "model"


class Server:
    """`theworld serve` in its own process (as users run it), on a free loopback port."""

    def __init__(self, model_dir: Path, batch_size: int, threads: int, log: Path, batch_wait_ms: float) -> None:
        import httpx2

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": str(REPO_ROOT / "src")}  # fmt: skip
        with open(log, "w") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "theworld", "serve", str(model_dir), "--port", str(port), "--served-model-name",
                 "bench", "--max-batch-size", str(batch_size), "--max-queue", "256", "--max-tokens", "256",
                 "--batch-wait-ms", str(batch_wait_ms)],
                stdout=handle, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"theworld serve exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx2.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.3)
        self.base = base
        self.url = base + "/v1/chat/completions"

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (all its threads), from /proc."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stats(self) -> dict[str, Any]:
        import httpx2

        return httpx2.get(self.base + "/health").json()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def request_bodies(n: int, max_tokens: int, workdir: Path, clip_every: int = 4) -> list[dict[str, Any]]:
    """Images, and every `clip_every`-th request a clip (of 5 or 9 frames), each with its own question."""
    from theworld.testing.inputs import moving_frames, random_image, write_video

    def data_url(data: bytes, mime: str) -> str:
        return f"data:{mime};base64," + base64.b64encode(data).decode()

    clips = []
    for frames in (5, 9):
        path = write_video(workdir / f"clip{frames}.webm", moving_frames(frames, size=48, seed=frames), fps=8)
        clips.append({"type": "video_url", "video_url": {"url": data_url(Path(path).read_bytes(), "video/webm")}})
    bodies = []
    for i in range(n):
        if clip_every and i % clip_every == clip_every - 1:
            part = clips[(i // clip_every) % 2]
        else:
            buffer = io.BytesIO()
            random_image(i, 48).save(buffer, format="PNG")
            part = {"type": "image_url", "image_url": {"url": data_url(buffer.getvalue(), "image/png")}}
        text = {"type": "text", "text": f"Question {i}: which way is the ball moving?"}
        bodies.append({"model": "bench", "messages": [{"role": "user", "content": [part, text]}],
                       "max_tokens": max_tokens, "temperature": 0})  # fmt: skip
    return bodies


def load(url: str, bodies: list[dict[str, Any]], clients: int) -> tuple[float, list[str]]:
    """Send every body with `clients` concurrent clients; (requests/s, answers in body order)."""
    import httpx2

    def send(body: dict[str, Any]) -> str:
        with httpx2.Client(timeout=600) as http:
            response = http.post(url, json=body)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(send, bodies))
    return len(bodies) / (time.perf_counter() - start), answers


def run(size: str = "tiny", clients: int = 8, requests: int = 4, rounds: int = 5, max_tokens: int = 32,
        batch_size: int = 8, threads: int = 1, batch_wait_ms: float = 50.0, clip_every: int = 4) -> dict[str, Any]:  # fmt: skip
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="theworld_serve_bench_") as tmp:
        model_dir = build_model(Path(tmp), size)
        bodies = request_bodies(clients * requests, max_tokens, Path(tmp), clip_every)
        batched = Server(model_dir, batch_size, threads, Path(tmp) / "batched.log", batch_wait_ms)
        single = Server(model_dir, 1, threads, Path(tmp) / "single.log", batch_wait_ms)
        try:
            load(batched.url, bodies[:clients], clients)  # warm-up both
            load(single.url, bodies[:clients], clients)
            ratios, cpu_ratios, rates = [], [], {"batched": [], "single": []}
            for r in range(rounds):
                order = [("batched", batched), ("single", single)][:: 1 if r % 2 == 0 else -1]
                answers, cpu = {}, {}
                for name, server in order:
                    before = server.cpu_seconds()
                    rate, answers[name] = load(server.url, bodies, clients)
                    cpu[name] = server.cpu_seconds() - before
                    rates[name].append(rate)
                if answers["batched"] != answers["single"]:
                    raise RuntimeError("batched and one-at-a-time servers answered differently")
                ratios.append(rates["batched"][-1] / rates["single"][-1])
                cpu_ratios.append(cpu["single"] / cpu["batched"])
            largest = batched.stats()["largest_batch"]
        finally:
            batched.close()
            single.close()
    ratio = statistics.median(ratios)
    return {
        "ratio": ratio,
        "ratios": ratios,
        "cpu_ratio": statistics.median(cpu_ratios),
        "cpu_ratios": cpu_ratios,
        "batched_rps": statistics.median(rates["batched"]),
        "single_rps": statistics.median(rates["single"]),
        "largest_batch": largest,
        "settings": dict(size=size, clients=clients, requests=clients * requests, rounds=rounds, max_tokens=max_tokens,
                         batch_size=batch_size, batch_wait_ms=batch_wait_ms, clip_every=clip_every),  # fmt: skip
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--clip-every", type=int, default=4, help="every Nth request carries a clip (0: images only)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="the servers' torch threads (default 1, as the other benchmarks)")
    parser.add_argument("--batch-wait-ms", type=float, default=50.0, help="the servers' --batch-wait-ms (default 50)")
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    args = parser.parse_args(argv)
    result = run(args.size, args.clients, args.requests, args.rounds, args.max_tokens, args.batch_size, args.threads,
                 args.batch_wait_ms, args.clip_every)
    command = command_line("benchmarks/serve_throughput.py", sys.argv[1:] if argv is None else argv)
    s = result["settings"]
    note = (f"{s['size']} model, {s['clients']} concurrent clients, {s['requests']} chat requests per round (images, every "
            f"{s['clip_every']}th a clip of 5 or 9 frames; greedy, {s['max_tokens']} tokens), {s['rounds']} rounds: batched "
            f"{result['batched_rps']:.2f} req/s wall clock (largest batch {result['largest_batch']}) vs one at a time "
            f"{result['single_rps']:.2f} req/s; per-round ratios "
            + ", ".join(f"{r:.2f}" for r in result["ratios"]) + "; server CPU time per request, one at a time / "
            f"batched: {result['cpu_ratio']:.2f}x (per round " + ", ".join(f"{r:.2f}" for r in result["cpu_ratios"])
            + "), less sensitive to other jobs on the machine; identical answers from both servers.")  # fmt: skip
    print(f"server throughput, batching / one at a time: {result['ratio']:.2f}x ({note})")
    figure = {"name": f"server throughput at {s['clients']} concurrent clients, batching (up to {s['batch_size']}) / one "
                      "request at a time", "value": result["ratio"], "unit": "x", "target": ">= 2",
              "passed": result["ratio"] >= 2.0, "command": command, "note": note}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "figures": [figure]}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
