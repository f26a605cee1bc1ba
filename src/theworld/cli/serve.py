"""`theworld serve MODEL`: an OpenAI-compatible server (and a web page at `/`) for a model.

    theworld serve runs/finetune --host 127.0.0.1 --port 8000

`POST /v1/chat/completions` (streaming or not; text, image_url and video_url parts; the
extension `"world": "on" | "off"`), `GET /v1/models`, `GET /health`, and the page at `/`.
Requests are batched (up to --max-batch-size per `generate`); a full queue answers 503.
See docs/serving.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from theworld.cli.chat import add_loading_arguments

API_KEY_ENV = "THEWORLD_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from theworld.serving.media import Limits

    defaults = Limits()
    parser.add_argument("model", help="TheWorld folder, adapter folder, or Gemma 3 checkpoint (path or Hub id)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"bearer key required on /v1/* (default: ${API_KEY_ENV}); /health and the page stay open")
    parser.add_argument("--allow-remote-without-key", action="store_true",
                        help="bind beyond localhost with no API key (refused otherwise)")
    parser.add_argument("--media-root", help="folder whose files clients may name (file:// URLs, absolute paths); "
                        "without it only data: URLs are read")
    parser.add_argument("--served-model-name", help="the model id clients send (default: the MODEL argument's folder name)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="requests per generate call (default 8)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting before 503 (default 64)")
    parser.add_argument("--batch-wait-ms", type=float, default=50.0,
                        help="under load, wait up to this long for a batch to fill (default 50; idle: no wait)")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes, help="largest request body (413 above)")
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels, help="largest image or video frame")
    parser.add_argument("--max-clip-frames", type=int, default=defaults.max_clip_frames, help="most frames in a video file")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens, help="largest max_tokens (also the default)")
    add_loading_arguments(parser)  # fmt: skip


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from theworld.errors import TheWorldUserError
    from theworld.serving.api import ServerState, create_app
    from theworld.serving.engine import Engine
    from theworld.serving.loading import load_model_and_processor
    from theworld.serving.media import Limits

    if not args.api_key and not is_loopback(args.host) and not args.allow_remote_without_key:
        raise TheWorldUserError(
            f"--host {args.host} reaches beyond this machine and no API key is set: pass --api-key (or set "
            f"${API_KEY_ENV}), or --allow-remote-without-key if the network is yours alone"
        )
    if args.media_root is not None and not os.path.isdir(args.media_root):
        raise TheWorldUserError(f"--media-root {args.media_root} is not a folder")
    limits = Limits(args.max_body_bytes, args.max_image_pixels, args.max_clip_frames, args.max_tokens)
    if min(limits.max_body_bytes, limits.max_image_pixels, limits.max_clip_frames, limits.max_tokens) < 1:
        raise TheWorldUserError("--max-body-bytes, --max-image-pixels, --max-clip-frames and --max-tokens must be >= 1")
    model, processor = load_model_and_processor(args.model, args.device, args.dtype, args.cosmos_model_name)
    engine = Engine(model, processor, args.max_batch_size, args.max_queue, args.batch_wait_ms / 1000).start()
    name = args.served_model_name or os.path.basename(os.path.normpath(args.model))
    state = ServerState(engine, name, api_key=args.api_key or None, media_root=args.media_root, limits=limits)
    logging.getLogger(__name__).info("serving %s as %r on http://%s:%d (world %s, batches of %d)", args.model, name,
                                     args.host, args.port, "on" if engine.has_world else "off", args.max_batch_size)
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, access_log=False, log_level="info")
    finally:
        engine.stop()
    return 0
