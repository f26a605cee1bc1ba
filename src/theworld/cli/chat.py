"""`theworld chat MODEL`: talk to a model in the terminal; answers stream as they are generated.

    theworld chat runs/finetune
    > /video clip.mp4
    > Which way is the ball moving?

Commands: /image PATH, /video PATH, /world on|off, /reset, /save FILE, /help, /quit.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="TheWorld folder, adapter folder, or Gemma 3 checkpoint (path or Hub id)")
    add_sampling_arguments(parser)
    parser.add_argument("--world", choices=("on", "off"), help="start with world tokens on or off (default: on if the model has them)")
    add_loading_arguments(parser)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per answer (default 256)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default 0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when temperature > 0 (default 1)")
    parser.add_argument("--seed", type=int, help="seed for sampling (each answer is then reproducible)")


def add_loading_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cosmos-model-name", help="Cosmos repo or VAE folder, if the model folder holds no world encoder")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 (default: bfloat16 on GPU, float32 on CPU)")


def run(args: argparse.Namespace) -> int:
    from theworld.errors import TheWorldUserError
    from theworld.serving.chat import ChatSession
    from theworld.serving.engine import Engine, SamplingParams
    from theworld.serving.loading import load_model_and_processor

    if args.max_new_tokens < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
        raise TheWorldUserError("--max-new-tokens must be >= 1, --temperature >= 0, --top-p in (0, 1]")
    model, processor = load_model_and_processor(args.model, args.device, args.dtype, args.cosmos_model_name)
    engine = Engine(model, processor, max_batch_size=1, batch_wait_s=0.0).start()
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    world = None if args.world is None else args.world == "on"
    session = ChatSession(engine, params, sys.stdout, world=world)
    if world and not engine.has_world:
        raise TheWorldUserError(f"{args.model} has no world path: use --world off")
    interactive = sys.stdin.isatty()
    session.say(f"theworld chat: {args.model} (world {'on' if session.world else 'off'}); /help lists the commands")
    try:
        while True:
            try:
                line = input("> ") if interactive else sys.stdin.readline()
            except EOFError:
                break
            if not interactive and not line:
                break
            if not session.handle(line):
                break
    except KeyboardInterrupt:
        session.say("")
    finally:
        engine.stop()
    return 0
