"""One side of the cross-version checkpoint test; run under either transformers version.

    python interchange_worker.py THREADS write DIR          # tiny checkpoints + fixed inputs into DIR
    python interchange_worker.py THREADS logits DIR FILE    # load DIR's checkpoints, save logits to FILE

`write` makes, with the running transformers: a tiny Gemma 3 checkpoint (non-default rope
settings, so that a config field read differently shows up), a tiny Cosmos-style VAE, a saved
TheWorld directory with a world projector and its processor, and the same Gemma weights saved
the way a model built from scratch saves them (`gemma_native`: under transformers 5 its SigLIP
keys lack `vision_model`). It also stores the processed inputs (text chat, image chat, world
clip) in `inputs.pt`.

`logits` loads every checkpoint in DIR with the running transformers, runs each on the stored
inputs (fp32, eager attention) and saves the logits, together with the inputs its own processors
build from DIR's processor files, to FILE. The test compares two such files bit for bit.
The test imports this file too, to run a side in its own process when both sides are one version.

THREADS is the torch thread count, passed by the test from its own process: on Intel CPUs with
AVX-512 (MKL's sgemm, which also runs the VAE's 3D convolutions) the thread count changes how a
reduction is split, and so the last bits of the result. Both sides must compute with the same
count for a bit-for-bit comparison to test the library versions and nothing else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Non-default rope: transformers 4.57 and 5 store these in different config fields.
ROPE = dict(rope_theta=50_000.0, rope_local_base_freq=2_000.0, rope_scaling={"rope_type": "linear", "factor": 4.0})
TEXT_CHAT = [{"role": "user", "content": [{"type": "text", "text": "Which way is the ball moving? Describe the scene."}]}]
INPUT_KINDS = ("text", "image", "world")
# checkpoint -> the inputs it is run on
MODELS = {
    "gemma": ("text", "image"),  # plain Gemma3ForConditionalGeneration
    "theworld_off": ("text", "image"),  # TheWorld(enable_world=False) from the Gemma checkpoint
    "theworld": ("text", "image", "world"),  # the saved TheWorld directory
    "gemma_native_as_theworld": ("image",),  # TheWorld from the scratch-layout Gemma save
}


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "torch": str(torch.__version__),
        "threads": str(torch.get_num_threads()),
    }


def build_inputs(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The three inputs, each made by the processor saved in `root` (Gemma's, TheWorld's)."""
    from transformers import Gemma3Processor

    from theworld import TheWorldProcessor
    from theworld.testing.inputs import clip_chat, image_chat

    gemma = Gemma3Processor.from_pretrained(root / "gemma")
    world = TheWorldProcessor.from_pretrained(root / "theworld")
    common = dict(tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
    out = {
        "text": gemma.apply_chat_template(TEXT_CHAT, **common),
        "image": gemma.apply_chat_template(image_chat(3, question="Describe this scene."), **common),
        "world": world.apply_chat_template(clip_chat(4, frames=5), **common),
    }
    return {kind: {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)} for kind, batch in out.items()}


def write(root: Path) -> None:
    from transformers import Gemma3ForConditionalGeneration

    from theworld import TheWorld, TheWorldProcessor
    from theworld.testing.tiny import TINY_WORLD_SETTINGS, TinyGemmaSpec, make_tiny_gemma, make_tiny_vae

    root.mkdir(parents=True, exist_ok=True)
    gemma_dir = make_tiny_gemma(root / "gemma", TinyGemmaSpec(**ROPE))
    vae_dir = make_tiny_vae(root / "cosmos")

    model = TheWorld.from_pretrained(gemma_dir, cosmos_model_name=str(vae_dir), **TINY_WORLD_SETTINGS)
    torch.manual_seed(7)
    with torch.no_grad():  # trained-looking world weights, so that a load that drops them shows
        model.world_projector.temporal_embedding.normal_(0, 0.1)
        model.world_projector.proj[0].weight.mul_(3.0)
    model.save_pretrained(root / "theworld")
    TheWorldProcessor.from_model_config(str(gemma_dir), model.config).save_pretrained(root / "theworld")

    # The same weights saved as a model built from scratch saves them (no recorded conversions).
    loaded = Gemma3ForConditionalGeneration.from_pretrained(gemma_dir)
    scratch = Gemma3ForConditionalGeneration(loaded.config)
    scratch.load_state_dict(loaded.state_dict())
    scratch.save_pretrained(root / "gemma_native")

    torch.save({"inputs": build_inputs(root), "versions": _versions()}, root / "inputs.pt")


def load(root: Path, name: str) -> torch.nn.Module:
    from transformers import Gemma3ForConditionalGeneration

    from theworld import TheWorld

    common = dict(dtype=torch.float32, attn_implementation="eager")
    if name == "gemma":
        return Gemma3ForConditionalGeneration.from_pretrained(root / "gemma", **common)
    if name == "theworld_off":
        return TheWorld.from_pretrained(str(root / "gemma"), enable_world=False, **common)
    if name == "theworld":
        return TheWorld.from_pretrained(str(root / "theworld"), **common)
    if name == "gemma_native_as_theworld":
        return TheWorld.from_pretrained(str(root / "gemma_native"), enable_world=False, **common)
    raise ValueError(name)


@torch.no_grad()
def logits(root: Path) -> dict:
    """{"logits": {"model/input": tensor}, "inputs": what this side's processors build, "versions"}."""
    stored = torch.load(root / "inputs.pt")["inputs"]
    result: dict[str, torch.Tensor] = {}
    for name, kinds in MODELS.items():
        model = load(root, name).eval()
        for kind in kinds:
            result[f"{name}/{kind}"] = model(**stored[kind]).logits.detach().clone()
        del model
    return {"logits": result, "inputs": build_inputs(root), "versions": _versions()}


def main(argv: list[str]) -> int:
    torch.set_num_threads(int(argv[0]))
    command, root = argv[1], Path(argv[2])
    if command == "write":
        write(root)
    elif command == "logits":
        torch.save(logits(root), argv[3])
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    raise SystemExit(main(sys.argv[1:]))
