"""A terminal chat over the generation engine: multi-turn history, attachments, streamed answers.

Lines starting with `/` are commands (see `HELP`); anything else is a user turn, sent with the
images and clips attached since the last turn. The answer streams to `out` as it is generated.
"""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

from theworld.data.images import CORRUPT_IMAGE_ERRORS, resolve_clip
from theworld.errors import TheWorldUserError
from theworld.processing.video import Clip, VideoFile, load_video
from theworld.serving.engine import Delta, Engine, Failed, Finished, GenerationRequest, SamplingParams

HELP = """commands:
  /image PATH     attach an image to your next message
  /video PATH     attach a clip: a video file (mp4, webm, mov, gif) or a folder of frames
  /world on|off   world tokens on, or plain Gemma 3 (off)
  /reset          forget the conversation and any attachments
  /save FILE      write the conversation as JSON (chat messages; images and clips as their paths)
  /help           this text
  /quit           leave (Ctrl-D too)"""


class ChatSession:
    """One conversation: `handle(line)` runs a command or answers a turn, writing to `out`."""

    def __init__(self, engine: Engine, params: SamplingParams, out: TextIO, world: bool | None = None) -> None:
        self.engine = engine
        self.params = params
        self.out = out
        self.world = engine.has_world if world is None else world
        self.num_frames = int(getattr(engine.processors[True], "world_num_frames", 1))
        self.history: list[dict[str, Any]] = []  # chat messages, visuals loaded
        self.saved: list[dict[str, Any]] = []  # the same messages with visuals as paths (for /save)
        self.pending: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (loaded item, saved item)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def handle(self, line: str) -> bool:
        """Process one input line; False when the user asked to leave."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            self.ask(line)
            return True
        command, _, arg = line.partition(" ")
        arg = arg.strip()
        if command in ("/quit", "/exit"):
            return False
        try:
            if command == "/image":
                self.attach_image(arg)
            elif command == "/video":
                self.attach_clip(arg)
            elif command == "/world":
                self.set_world(arg)
            elif command == "/reset":
                self.history, self.saved, self.pending = [], [], []
                self.say("(conversation cleared)")
            elif command == "/save":
                self.save(arg)
            elif command == "/help":
                self.say(HELP)
            else:
                self.say(f"unknown command {command}; /help lists them")
        except TheWorldUserError as err:
            self.say(f"error: {err}")
        return True

    def attach_image(self, path: str) -> None:
        if not path:
            raise TheWorldUserError("/image needs a path")
        try:
            with Image.open(Path(path).expanduser()) as handle:
                image = handle.convert("RGB")
        except FileNotFoundError as err:
            raise TheWorldUserError(f"image not found: {path}") from err
        except CORRUPT_IMAGE_ERRORS as err:
            raise TheWorldUserError(f"cannot read image {path}: {err}") from err
        self.pending.append(({"type": "image", "image": image}, {"type": "image", "image": str(Path(path).expanduser().resolve())}))
        self.say(f"(image attached: {path}, {image.size[0]}x{image.size[1]})")

    def attach_clip(self, path: str) -> None:
        if not path:
            raise TheWorldUserError("/video needs a path")
        from theworld.data.images import UnreadableVisual

        try:
            source = resolve_clip(path, None)
        except UnreadableVisual as err:
            raise TheWorldUserError(str(err)) from err
        if isinstance(source, VideoFile):
            clip = load_video(source, self.num_frames)
            times = ", ".join(f"{t:.2f}" for t in clip.frame_times or [])
            self.say(f"(clip attached: {path}, {len(clip)} frames at {times} s)")
        else:
            try:
                clip = Clip(Image.open(f).convert("RGB") for f in source)
            except CORRUPT_IMAGE_ERRORS as err:
                raise TheWorldUserError(f"cannot read a frame of {path}: {err}") from err
            self.say(f"(clip attached: {path}, {len(clip)} frames)")
        saved = str(source) if isinstance(source, VideoFile) else list(source)
        self.pending.append(({"type": "video", "video": clip}, {"type": "video", "video": saved}))

    def set_world(self, value: str) -> None:
        if value not in ("on", "off"):
            raise TheWorldUserError("/world takes on or off")
        if value == "on" and not self.engine.has_world:
            raise TheWorldUserError("this model has no world path (enable_world=False)")
        self.world = value == "on"
        self.say(f"(world {value})")

    def save(self, path: str) -> None:
        if not path:
            raise TheWorldUserError("/save needs a file name")
        Path(path).expanduser().write_text(json.dumps(self.saved, indent=2) + "\n", encoding="utf-8")
        self.say(f"(saved {len(self.saved)} messages to {path})")

    def ask(self, text: str) -> str | None:
        """Send a user turn with the pending attachments; stream and keep the answer."""
        user = {"role": "user", "content": [item for item, _ in self.pending] + [{"type": "text", "text": text}]}
        user_saved = {"role": "user", "content": [item for _, item in self.pending] + [{"type": "text", "text": text}]}
        events: queue.Queue = queue.Queue()
        request = GenerationRequest(self.history + [user], self.params, events.put, world=self.world)
        self.engine.submit(request)
        answer = []
        while True:
            event = events.get()
            if isinstance(event, Delta):
                answer.append(event.text)
                self.out.write(event.text)
                self.out.flush()
            elif isinstance(event, Failed):
                self.say(f"error: {event.message}")
                return None
            elif isinstance(event, Finished):
                self.say("")
                break
        reply = "".join(answer)
        assistant = {"role": "assistant", "content": [{"type": "text", "text": reply}]}
        self.history += [user, assistant]
        self.saved += [user_saved, assistant]
        self.pending = []
        return reply
