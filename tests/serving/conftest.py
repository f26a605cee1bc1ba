"""A saved tiny TheWorld (with its VAE encoder and processor) to serve, and a live server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from theworld import TheWorld, TheWorldProcessor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def served_model_dir(tmp_path_factory, tiny_gemma_dir, tiny_vae_dir, world_settings):
    """A TheWorld folder as training leaves it: weights, world_encoder/, processor."""
    out = tmp_path_factory.mktemp("served") / "tiny-world"
    model = TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, **world_settings)
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking projector: temporal embeddings non-zero
        model.world_projector.temporal_embedding.normal_(0, 0.1)
    model.save_pretrained(out)
    TheWorldProcessor.from_model_config(tiny_gemma_dir, model.config).save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(model_dir: Path, log_path: Path, *flags: str, timeout: float = 120.0):
    """`theworld serve` in a subprocess on a free loopback port; yields its base URL."""
    import httpx2 as httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("THEWORLD_API_KEY", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "theworld", "serve", str(model_dir), "--host", "127.0.0.1",
                                 "--port", str(port), *flags], stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"theworld serve exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"theworld serve did not start in {timeout} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
