"""The generation engine behind `theworld serve` and `theworld chat`: a bounded queue and batches.

Requests wait in a bounded FIFO queue; one worker thread takes up to `max_batch_size` compatible
requests at a time (same world mode and sampling settings), builds them into one left-padded
batch with the processor (world blocks of different lengths in one batch are fine), and runs one
`generate` for the batch. Under load it waits up to `batch_wait_s` for a batch to fill (clients
whose answers just came back are sending their next requests); an idle engine starts at once. Tokens are streamed per row as they come, through a `BaseStreamer`.

- A full queue refuses a request at once (`QueueFull`): the caller answers 503.
- A cancelled request (a client that went away) leaves the queue, or, while it is generating,
  its row is stopped by a stopping criterion; the batch ends as soon as every row is done.
- Greedy requests give each row the tokens it gets alone. A sampling request with a `seed` runs
  in a batch of its own, so the seed reproduces its answer; other sampling requests share
  batches with identical settings and draw from one generator.
- Stop strings end a row when its text contains one; text that could be the start of a stop
  string is held back until it cannot, so a stop string never reaches the client.

Everything a request learns arrives as events through its `emit` callback, from the worker
thread: `Started`, `Delta`s, then `Finished` or `Failed`.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The engine's queue holds `max_queue` requests already."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings; temperature 0 is greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


# ------------------------------------------------------------------------------------------------
# events


@dataclass
class Started:
    prompt_tokens: int


@dataclass
class Delta:
    text: str


@dataclass
class Finished:
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    generate_s: float


@dataclass
class Failed:
    status: int  # 400: the request's content could not be used; 500: the engine failed
    message: str


Event = Started | Delta | Finished | Failed


_ids = itertools.count()


@dataclass(eq=False)
class GenerationRequest:
    """One chat to answer. `messages` are in the processor's chat format, visuals already loaded
    (PIL images, `Clip`s); `world` picks the world path (True) or plain Gemma 3 (False)."""

    messages: list[dict[str, Any]]
    params: SamplingParams
    emit: Callable[[Event], None]
    world: bool = True
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    submitted: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share one `generate` call."""
        p = self.params
        if p.greedy:
            return (self.world, "greedy")
        if p.seed is not None:
            return (self.world, "seeded", self.id)  # alone: its seed alone decides its samples
        return (self.world, "sample", p.temperature, p.top_p)


# ------------------------------------------------------------------------------------------------
# per-row decoding


class _Row:
    """Decoding state of one request inside a batch: its tokens, its text, when it ends.

    Text is emitted only where it can no longer change. With byte-fallback tokenizers (Gemma's)
    a run of byte tokens (`<0xE2>`, ...) decodes as a whole: one byte may read as "@" alone and
    as part of "\ufffd\ufffd" once the next byte arrives. So the trailing run of byte tokens
    (special tokens, which decoding skips, do not end a run) is held back until a normal token
    closes it, and text that could still become a stop string is held back too. The streamed
    deltas then add up to exactly `decode(tokens, skip_special_tokens=True)`.
    """

    def __init__(self, request: GenerationRequest, tokenizer: Any, eos_ids: set[int], decoding: _Decoding) -> None:
        self.request = request
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.decoding = decoding
        self.ids: list[int] = []  # every generated token (for usage)
        self.visible: list[int] = []  # the tokens decoding keeps (no special tokens)
        self.sent = 0  # characters of the text already emitted
        self.done = False
        self.finish_reason = "length"
        self.holdback = max((len(s) for s in request.params.stop), default=1) - 1

    def add(self, token: int) -> None:
        if self.done:
            return
        self.ids.append(token)
        if token in self.eos_ids:
            self._finish("stop", self.text())
            return
        if token not in self.decoding.special_ids:
            self.visible.append(token)
        text = self.text()
        stops = [text.find(s) for s in self.request.params.stop if s in text]
        if stops:
            self._finish("stop", text[: min(stops)])
        elif len(self.ids) >= self.request.params.max_new_tokens:
            self._finish("length", text)
        else:
            stable = len(self.visible)
            while stable and self.visible[stable - 1] in self.decoding.byte_ids:
                stable -= 1
            settled = self.tokenizer.decode(self.visible[:stable], skip_special_tokens=True) if stable < len(self.visible) else text
            end = min(len(settled), len(text) - self.holdback)
            while end > self.sent and settled[end - 1] == "\ufffd":  # a byte-level BPE's half character
                end -= 1
            self._send(settled[:end])

    def text(self) -> str:
        return self.tokenizer.decode(self.visible, skip_special_tokens=True)

    def _send(self, text: str) -> None:
        if len(text) > self.sent:
            self.request.emit(Delta(text[self.sent :]))
            self.sent = len(text)

    def _finish(self, reason: str, text: str) -> None:
        self._send(text)
        self.done, self.finish_reason = True, reason


@dataclass(frozen=True)
class _Decoding:
    """Token classes the incremental decoding needs: skipped special tokens and byte-fallback tokens."""

    special_ids: frozenset[int]
    byte_ids: frozenset[int]

    @classmethod
    def of(cls, tokenizer: Any) -> _Decoding:
        vocab = tokenizer.get_vocab()
        byte_ids = frozenset(i for token, i in vocab.items() if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token))
        return cls(frozenset(tokenizer.all_special_ids), byte_ids)


class _BatchStreamer(BaseStreamer):
    """`generate` calls `put` with the prompt (B, L) first, then with each step's tokens (B,)."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(len(self.rows), -1)[:, -1].tolist()):
            row.add(int(token))

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    """A row is done when it finished (end of turn, stop string, its own max tokens) or was cancelled."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        done = [row.done or row.request.cancelled.is_set() for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


# ------------------------------------------------------------------------------------------------
# the engine


class Engine:
    """A worker thread answering `GenerationRequest`s in batches (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        max_batch_size: int = 8,
        max_queue: int = 64,
        batch_wait_s: float = 0.05,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise TheWorldUserError(f"max_batch_size ({max_batch_size}) and max_queue ({max_queue}) must be >= 1")
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self.has_world = bool(getattr(processor, "enable_world", False)) and getattr(model, "world_projector", None) is not None
        # World off is plain Gemma 3: the same processor with its world blocks switched off.
        self.processors = {True: processor, False: copy.copy(processor)}
        self.processors[False].enable_world = False
        self.tokenizer = processor.tokenizer
        self.eos_ids = _eos_ids(model, self.tokenizer)
        self.decoding = _Decoding.of(self.tokenizer)
        self._queue: deque[GenerationRequest] = deque()
        self._lock = threading.Condition()
        self._running = 0
        self._stopped = False
        self._counts = {"batches": 0, "largest_batch": 0, "cancelled": 0}
        self._last_batch_end = float("-inf")
        self._thread = threading.Thread(target=self._loop, name="theworld-engine", daemon=True)

    # -- public
    def start(self) -> Engine:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        self._thread.join(timeout)

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request, or raise `QueueFull` at once."""
        if request.world and not self.has_world:
            raise TheWorldUserError("this model has no world path (enable_world=False): ask with world off")
        with self._lock:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the queue holds {len(self._queue)} requests (--max-queue {self.max_queue})")
            self._queue.append(request)
            self._lock.notify_all()

    def cancel(self, request: GenerationRequest) -> None:
        """The client went away: leave the queue, or stop the row at the next step."""
        request.cancelled.set()
        with self._lock:
            if request in self._queue:
                self._queue.remove(request)
                self._counts["cancelled"] += 1

    def stats(self) -> dict[str, int]:
        """Requests waiting and generating now; batches run, the largest, requests dropped by their client."""
        with self._lock:
            return {"queued": len(self._queue), "running": self._running, **self._counts}

    # -- worker
    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as err:  # a bug or out of memory: fail this batch, keep serving the next
                logger.exception("generation failed for %s", ", ".join(r.id for r in batch))
                for request in batch:
                    request.emit(Failed(500, f"generation failed: {type(err).__name__}: {err}"))
            finally:
                with self._lock:
                    self._running = 0
                    self._last_batch_end = time.monotonic()

    def _next_batch(self) -> list[GenerationRequest] | None:
        with self._lock:
            while not self._queue and not self._stopped:
                self._lock.wait()
            # Under load (a batch ended moments ago) let requests that arrive close together share the
            # next batch: wait up to batch_wait_s for it to fill. An idle engine answers at once.
            busy = time.monotonic() - self._last_batch_end < 1.0
            deadline = time.monotonic() + (self.batch_wait_s if busy else 0.0)
            while len(self._queue) < self.max_batch_size and not self._stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            if self._stopped:
                return None
            if not self._queue:
                return []
            key = self._queue[0].batch_key()
            batch = [r for r in self._queue if r.batch_key() == key][: self.max_batch_size]
            for request in batch:
                self._queue.remove(request)
            self._running = len(batch)
            self._counts["batches"] += 1
            self._counts["largest_batch"] = max(self._counts["largest_batch"], len(batch))
            return batch

    def _encode(self, requests: list[GenerationRequest]) -> tuple[list[GenerationRequest], Any]:
        """Tokenise a batch, left-padded; a request whose content the processor refuses fails alone."""
        processor = self.processors[requests[0].world]
        kwargs = dict(tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True, padding=True,
                      padding_side="left")  # fmt: skip
        try:
            return requests, processor.apply_chat_template([r.messages for r in requests], **kwargs)
        except (ValueError, TypeError, OSError, TheWorldUserError) as batch_error:
            if len(requests) == 1:
                requests[0].emit(Failed(400, f"cannot build the prompt: {batch_error}"))
                return [], None
        kept = []
        for request in requests:
            try:
                processor.apply_chat_template([request.messages], **kwargs)
                kept.append(request)
            except (ValueError, TypeError, OSError, TheWorldUserError) as err:
                request.emit(Failed(400, f"cannot build the prompt: {err}"))
        return (kept, processor.apply_chat_template([r.messages for r in kept], **kwargs)) if kept else ([], None)

    def _run(self, batch: list[GenerationRequest]) -> None:
        batch = [r for r in batch if not r.cancelled.is_set()]
        if not batch:
            return
        started = time.monotonic()
        batch, inputs = self._encode(batch)
        if not batch:
            return
        param = self.model.get_input_embeddings().weight
        inputs = inputs.to(param.device)
        for key in ("pixel_values", "world_pixel_values"):
            if key in inputs:
                inputs[key] = inputs[key].to(param.dtype)
        prompt_tokens = inputs["attention_mask"].sum(1).tolist()
        for request, n in zip(batch, prompt_tokens):
            request.emit(Started(int(n)))
        rows = [_Row(r, self.tokenizer, self.eos_ids, self.decoding) for r in batch]
        params = batch[0].params
        sampling: dict[str, Any] = {"do_sample": False}
        if not params.greedy:
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.seed is not None:
                torch.manual_seed(params.seed)
        with torch.inference_mode():
            self.model.generate(
                **inputs,
                max_new_tokens=max(r.params.max_new_tokens for r in batch),
                streamer=_BatchStreamer(rows),
                stopping_criteria=StoppingCriteriaList([_RowsDone(rows)]),
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        finished = time.monotonic()
        for row, n in zip(rows, prompt_tokens):
            if row.request.cancelled.is_set() and not row.done:
                with self._lock:
                    self._counts["cancelled"] += 1
                continue  # nobody is listening
            if not row.done:  # generate ended first (e.g. the model's own length limit)
                row._finish("length", row.text())
            row.request.emit(
                Finished(row.finish_reason, int(n), len(row.ids), started - row.request.submitted, finished - started)
            )


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The model's end-of-sequence ids plus the chat template's end of turn (`<end_of_turn>`)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    return ids
