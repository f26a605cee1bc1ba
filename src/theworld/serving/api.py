"""The OpenAI-compatible HTTP API (FastAPI): `/v1/chat/completions`, `/v1/models`, `/health`, `/`.

Any OpenAI client works unchanged. Message parts: `text`, `image_url` and `video_url` (vLLM's
name for a clip; a video file as a data: URL or a local file under `--media-root`). TheWorld's
one extension is `"world": "on" | "off"` in the request body; off is Gemma 3 exactly.

Errors are OpenAI-shaped (`{"error": {"message", "type", "param", "code"}}`) with the status a
client expects: 400 bad content, 401 bad key, 403 a path the server will not read, 404 unknown
model, 413 body too large, 503 queue full. Each request is logged in one line.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from importlib import resources
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from theworld.errors import TheWorldUserError
from theworld.serving.engine import (
    Delta,
    Engine,
    Event,
    Failed,
    Finished,
    GenerationRequest,
    QueueFull,
    SamplingParams,
    Started,
)
from theworld.serving.media import Limits, RequestError, load_clip, load_image

logger = logging.getLogger("theworld.serve")


# ------------------------------------------------------------------------------------------------
# request schema (what the server reads of OpenAI's; unknown fields are ignored, as OpenAI's own are)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Lenient):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    world: Literal["on", "off"] | None = None


# ------------------------------------------------------------------------------------------------


class ServerState:
    """What the routes share: the engine, the settings, and the processor's clip length."""

    def __init__(
        self,
        engine: Engine,
        model_name: str,
        api_key: str | None = None,
        media_root: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.api_key = api_key
        self.media_root = media_root
        self.limits = limits or Limits()
        self.num_frames = int(getattr(engine.processors[True], "world_num_frames", 1))
        self.created = int(time.time())


def error_response(error: RequestError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def check_key(state: ServerState, request: Request) -> None:
    """Bearer key, compared in constant time; no key configured means no check."""
    if state.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), state.api_key.encode()):
        raise RequestError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")


_MAX_DRAIN_BYTES = 64 * 2**20


async def read_body(state: ServerState, request: Request) -> dict[str, Any]:
    limit = state.limits.max_body_bytes
    too_large = RequestError(413, f"request body larger than {state.limits.describe('max_body_bytes')}",
                             code="request_too_large")  # fmt: skip
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > limit + _MAX_DRAIN_BYTES:
            break
        # Past the limit the rest is read without being kept (up to a bound), so a client that is
        # still sending gets the 413 rather than a reset connection.
    if size > limit:
        raise too_large
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the request body is not valid JSON ({err})", code="invalid_json") from err
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def parse_request(state: ServerState, body: dict[str, Any]) -> ChatCompletionRequest:
    try:
        parsed = ChatCompletionRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RequestError(400, f"{where}: {first['msg']}", param=where, code="invalid_value") from err
    if parsed.model != state.model_name:
        raise RequestError(404, f"the model {parsed.model!r} does not exist; this server serves {state.model_name!r}",
                           param="model", code="model_not_found")  # fmt: skip
    if parsed.n != 1:
        raise RequestError(400, f"n={parsed.n}: this server returns one choice (n=1)", param="n", code="invalid_value")
    max_tokens = parsed.max_completion_tokens or parsed.max_tokens
    if max_tokens is not None and max_tokens > state.limits.max_tokens:
        raise RequestError(400, f"max_tokens={max_tokens} is more than {state.limits.describe('max_tokens')}",
                           param="max_tokens", code="max_tokens_too_large")  # fmt: skip
    if parsed.world == "on" and not state.engine.has_world:
        raise RequestError(400, "world=on: this model has no world path", param="world", code="invalid_value")
    return parsed


def sampling_params(state: ServerState, parsed: ChatCompletionRequest) -> SamplingParams:
    stop = [parsed.stop] if isinstance(parsed.stop, str) else list(parsed.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise RequestError(400, "stop: at most 4 non-empty strings", param="stop", code="invalid_value")
    return SamplingParams(
        max_new_tokens=parsed.max_completion_tokens or parsed.max_tokens or state.limits.max_tokens,
        temperature=0.0 if parsed.temperature is None else parsed.temperature,  # greedy unless asked
        top_p=1.0 if parsed.top_p is None else parsed.top_p,
        seed=parsed.seed,
        stop=tuple(stop),
    )


def to_chat(state: ServerState, parsed: ChatCompletionRequest) -> list[dict[str, Any]]:
    """OpenAI messages -> the processor's chat format, images and clips decoded (blocking: run in a thread)."""
    messages = []
    for i, message in enumerate(parsed.messages):
        role = "system" if message.role == "developer" else message.role
        content = message.content
        if content is None or isinstance(content, str):
            messages.append({"role": role, "content": [{"type": "text", "text": content or ""}]})
            continue
        items = []
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise RequestError(400, f"{where}: a text part needs a string 'text'", param=where, code="invalid_value")
                items.append({"type": "text", "text": part["text"]})
            elif kind in ("image_url", "video_url"):
                if role != "user":
                    raise RequestError(400, f"{where}: only user messages may carry images or clips", param=where,
                                       code="invalid_value")  # fmt: skip
                ref = part.get(kind)
                url = ref.get("url") if isinstance(ref, dict) else ref
                if kind == "image_url":
                    items.append({"type": "image", "image": load_image(url, where, state.media_root, state.limits)})
                else:
                    clip = load_clip(url, where, state.media_root, state.limits, state.num_frames)
                    items.append({"type": "video", "video": clip})
            else:
                raise RequestError(400, f"{where}: unsupported content part type {kind!r} (text, image_url, video_url)",
                                   param=where, code="invalid_value")  # fmt: skip
        messages.append({"role": role, "content": items})
    return messages


# ------------------------------------------------------------------------------------------------


class _EngineStream(StreamingResponse):
    """Server-sent events that also watch for the client leaving, and then free its slot."""

    def __init__(self, content: Any, on_close: Any) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away while we were writing
        finally:
            self.on_close()


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="TheWorld", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("theworld.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return error_response(RequestError(500, f"internal error: {type(error).__name__}", kind="server_error"))

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": state.model_name, "world": state.engine.has_world,
                "auth": state.api_key is not None, "max_tokens": state.limits.max_tokens, **state.engine.stats()}  # fmt: skip

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(state, request)
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "theworld"}]}  # fmt: skip

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        status, usage, world, timing = 200, (0, 0), None, (0.0, 0.0)
        streaming = False
        try:
            check_key(state, request)
            parsed = parse_request(state, await read_body(state, request))
            world = state.engine.has_world if parsed.world is None else parsed.world == "on"
            params = sampling_params(state, parsed)
            messages = await run_in_threadpool(to_chat, state, parsed)
            response, usage, timing = await _answer(state, request, request_id, parsed, params, messages, world)
            status, streaming = response.status_code, isinstance(response, _EngineStream)
            return response
        except RequestError as error:
            status = error.status
            return error_response(error)
        finally:
            if not streaming:  # a stream logs its one line when it closes
                logger.info("%s world=%s status=%d tokens_in=%d tokens_out=%d queue_s=%.3f generate_s=%.3f",
                            request_id, {None: "-", True: "on", False: "off"}[world], status, usage[0], usage[1],
                            *timing)  # fmt: skip

    return app


async def _answer(
    state: ServerState,
    request: Request,
    request_id: str,
    parsed: ChatCompletionRequest,
    params: SamplingParams,
    messages: list[dict[str, Any]],
    world: bool,
) -> tuple[Response, tuple[int, int], tuple[float, float]]:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()
    job = GenerationRequest(messages, params, lambda e: loop.call_soon_threadsafe(events.put_nowait, e), world=world)
    try:
        state.engine.submit(job)
    except QueueFull as err:
        raise RequestError(503, f"server busy: {err}; retry later", code="queue_full") from err
    except TheWorldUserError as err:
        raise RequestError(400, str(err), code="invalid_value") from err
    created = int(time.time())

    async def next_event() -> Event | None:
        """The next event, or None when the client has gone (its slot is then freed)."""
        while True:
            try:
                return await asyncio.wait_for(events.get(), timeout=0.25)
            except TimeoutError:
                if await request.is_disconnected():
                    state.engine.cancel(job)
                    return None

    first = await next_event()
    if first is None:
        return Response(status_code=499), (0, 0), (0.0, 0.0)
    if isinstance(first, Failed):
        raise RequestError(first.status, first.message, kind="server_error" if first.status >= 500 else None)
    assert isinstance(first, Started)
    prompt_tokens = first.prompt_tokens

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": state.model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}  # fmt: skip

    def usage_of(done: Finished) -> dict[str, int]:
        return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens}  # fmt: skip

    if parsed.stream:
        include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        outcome: dict[str, Any] = {}

        async def sse():
            yield _sse(chunk({"role": "assistant", "content": ""}))
            while True:
                event = await events.get()
                if isinstance(event, Delta):
                    yield _sse(chunk({"content": event.text}))
                elif isinstance(event, Finished):
                    outcome["done"] = event
                    yield _sse(chunk({}, event.finish_reason))
                    if include_usage:
                        yield _sse({**chunk({}), "choices": [], "usage": usage_of(event)})
                    break
                elif isinstance(event, Failed):
                    yield _sse(RequestError(event.status, event.message, kind="server_error").body())
                    break
            yield "data: [DONE]\n\n"

        def closed() -> None:
            state.engine.cancel(job)  # a no-op when the answer is complete
            done = outcome.get("done")
            logger.info("%s world=%s status=200 stream tokens_in=%d tokens_out=%s queue_s=%.3f generate_s=%.3f%s",
                        request_id, "on" if world else "off", prompt_tokens, done.completion_tokens if done else "-",
                        done.queue_s if done else 0.0, done.generate_s if done else 0.0,
                        "" if done else " (client left before the end)")  # fmt: skip

        return _EngineStream(sse(), closed), (prompt_tokens, 0), (0.0, 0.0)

    text = []
    while True:
        event = await next_event()
        if event is None:
            return Response(status_code=499), (prompt_tokens, 0), (0.0, 0.0)
        if isinstance(event, Delta):
            text.append(event.text)
        elif isinstance(event, Failed):
            raise RequestError(event.status, event.message, kind="server_error" if event.status >= 500 else None)
        elif isinstance(event, Finished):
            body = {
                "id": request_id, "object": "chat.completion", "created": created, "model": state.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "logprobs": None, "finish_reason": event.finish_reason}],
                "usage": usage_of(event),
            }  # fmt: skip
            return JSONResponse(body), (event.prompt_tokens, event.completion_tokens), (event.queue_s, event.generate_s)
