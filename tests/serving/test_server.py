"""`theworld serve` through the real `openai` client, against one live server on 127.0.0.1.

The references are computed here, in the test process, from the same checkpoint: TheWorld's own
`generate` for world on, `Gemma3ForConditionalGeneration.generate` for world off.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import pytest
from transformers import Gemma3ForConditionalGeneration, Gemma3Processor

from theworld.processing.video import load_video
from theworld.serving.engine import _eos_ids
from theworld.serving.loading import load_model_and_processor
from theworld.testing.inputs import moving_frames, random_image, write_video

from .conftest import live_server

KEY = "test-key-7f3a"
MODEL = "tiny-world"
FLAGS = ["--api-key", KEY, "--max-body-bytes", "3000000", "--max-image-pixels", "6400", "--max-clip-frames", "40",
         "--max-tokens", "64", "--max-batch-size", "8", "--max-queue", "64", "--batch-wait-ms", "20"]  # fmt: skip


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    random_image(3, 40).save(root / "inside.png")
    (root.parent / "secret.png").write_bytes((root / "inside.png").read_bytes())
    os.symlink(root.parent / "secret.png", root / "link-out.png")
    write_video(root / "ball5.webm", moving_frames(5, size=32, seed=5), fps=10)
    write_video(root / "ball13.webm", moving_frames(13, size=32, seed=13), fps=10)
    write_video(root / "long.webm", moving_frames(50, size=16, seed=50), fps=25)
    return root


@pytest.fixture(scope="module")
def server(served_model_dir, media_root, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with live_server(served_model_dir, log, *FLAGS, "--media-root", str(media_root)) as url:
        yield url, log


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference(served_model_dir):
    """The served checkpoint, loaded here the way the server loads it."""
    return load_model_and_processor(str(served_model_dir), device="cpu", dtype="float32")


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_url(seed: int, size: int = 40) -> str:
    buffer = io.BytesIO()
    random_image(seed, size).save(buffer, format="PNG")
    return data_url(buffer.getvalue(), "image/png")


def video_url(path) -> str:
    return data_url(open(path, "rb").read(), "video/webm")


def user(*parts: dict, text: str = "Which way is the ball moving?") -> list[dict]:
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def ask(client, messages, max_tokens=8, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0, **kwargs)


def local_greedy(model, processor, chat, max_new_tokens, eos_ids) -> tuple[str, int, int]:
    """(text, prompt tokens, generated tokens) of one chat through `generate` in this process."""
    inputs = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(eos_ids))
    new = out[0, inputs["input_ids"].shape[1] :]
    return processor.decode(new, skip_special_tokens=True), int(inputs["input_ids"].shape[1]), int(new.shape[0])


# ------------------------------------------------------------------------------------------------


def test_models_health_and_key(server, client):
    url, _ = server
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(url + "/health").json()  # open without a key
    assert health["status"] == "ok" and health["world"] is True and health["auth"] is True
    assert httpx.get(url + "/").status_code == 200 and "<title>TheWorld</title>" in httpx.get(url + "/").text
    wrong = openai.OpenAI(base_url=url + "/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.chat.completions.create(model=MODEL, messages=user(), max_tokens=4)
    assert err.value.status_code == 401 and "API key" in err.value.body["message"]
    missing = httpx.get(url + "/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"


def test_non_streaming_image_answer_equals_local_generate(client, reference):
    model, processor = reference
    result = ask(client, user(image_part(png_url(1))), max_tokens=10)
    chat = user({"type": "image", "image": random_image(1, 40)})
    text, prompt_tokens, generated = local_greedy(model, processor, chat, 10, _eos_ids(model, processor.tokenizer))
    assert result.choices[0].message.content == text and text
    assert result.choices[0].message.role == "assistant"
    assert result.usage.prompt_tokens == prompt_tokens  # every input position: image and world placeholders too
    assert prompt_tokens > 16 + 4  # 16 world tokens and 4 image tokens are in it
    assert result.usage.completion_tokens == generated
    assert result.choices[0].finish_reason == ("length" if generated == 10 else "stop")


def test_streaming_video_equals_non_streaming_and_local(client, reference, media_root):
    model, processor = reference
    messages = user(video_part(video_url(media_root / "ball13.webm")))
    chunks = list(ask(client, messages, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 1  # really streamed, token by token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    whole = ask(client, messages, max_tokens=12)
    assert "".join(content) == whole.choices[0].message.content
    clip = load_video(str(media_root / "ball13.webm"), 9)
    text, prompt_tokens, _ = local_greedy(model, processor, user({"type": "video", "video": clip}), 12,
                                          _eos_ids(model, processor.tokenizer))  # fmt: skip
    assert whole.choices[0].message.content == text
    assert whole.usage.prompt_tokens == prompt_tokens
    assert prompt_tokens > 3 * 16  # 9 frames: 3 latent frames of 16 world tokens


def test_sse_wire_format_ends_with_done(server):
    url, _ = server
    body = {"model": MODEL, "messages": user(image_part(png_url(2))), "max_tokens": 4, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


def test_world_off_equals_gemma3_greedy_tokens(client, tiny_gemma_dir, reference):
    model, processor = reference
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir).eval()
    gemma_processor = Gemma3Processor.from_pretrained(tiny_gemma_dir)
    eos = _eos_ids(model, processor.tokenizer)
    for seed, question in [(4, "What happens next?"), (5, "Describe this scene in more words")]:
        result = ask(client, user(image_part(png_url(seed)), text=question), max_tokens=16, extra_body={"world": "off"})
        chat = user({"type": "image", "image": random_image(seed, 40)}, text=question)
        inputs = gemma_processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt",
                                                     add_generation_prompt=True)  # fmt: skip
        out = gemma.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=sorted(eos))
        new = out[0, inputs["input_ids"].shape[1] :]
        assert result.choices[0].message.content == gemma_processor.decode(new, skip_special_tokens=True)
        assert result.usage.completion_tokens == new.shape[0]
        assert result.usage.prompt_tokens == inputs["input_ids"].shape[1]  # no world block with world off
        world_on = ask(client, user(image_part(png_url(seed)), text=question), max_tokens=16)
        assert world_on.usage.prompt_tokens == result.usage.prompt_tokens + 16 + 2  # the world block


def test_16_concurrent_requests_each_equal_alone(server, client, media_root):
    """Images, clips of 5 and 9 frames, world on and off: batched together, none lost or mixed up."""
    url, _ = server
    clips = [video_url(media_root / "ball5.webm"), video_url(media_root / "ball13.webm")]

    def request(i: int) -> dict:
        kind = i % 4
        part = image_part(png_url(20 + i)) if kind in (0, 3) else video_part(clips[kind - 1])
        extra = {"world": "off"} if kind == 3 else {}
        return dict(messages=user(part, text=f"Question {i}: which way is the ball moving?"), max_tokens=6 + i % 3,
                    extra_body=extra)  # fmt: skip

    def answer(i: int) -> tuple[str, int, int]:
        r = ask(client, **request(i))
        return r.choices[0].message.content, r.usage.prompt_tokens, r.usage.completion_tokens

    alone = [answer(i) for i in range(16)]
    before = httpx.get(url + "/health").json()
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(answer, range(16)))
    after = httpx.get(url + "/health").json()
    assert together == alone
    assert after["largest_batch"] > 1 and after["batches"] - before["batches"] < 16  # really batched
    assert len({a[0] for a in alone}) > 4  # distinct answers: a mix-up would show


def test_dropped_stream_does_not_block_others(server, client):
    url, log = server
    before = httpx.get(url + "/health").json()["cancelled"]
    body = {"model": MODEL, "messages": user(image_part(png_url(30))), "max_tokens": 64, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        for line in r.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # the first token arrived: now leave mid-answer
    answer = ask(client, user(image_part(png_url(31))), max_tokens=4)
    assert answer.choices[0].message.content is not None
    deadline = time.monotonic() + 30
    while True:
        health = httpx.get(url + "/health").json()
        if health["cancelled"] > before and health["running"] == 0 and health["queued"] == 0:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    assert "client left before the end" in log.read_text()


def test_bad_requests_get_the_right_4xx_and_the_server_keeps_serving(server, client, media_root):
    url, log = server

    def status_of(messages, **kwargs) -> tuple[int, str]:
        try:
            ask(client, messages, max_tokens=kwargs.pop("max_tokens", 4), **kwargs)
        except openai.APIStatusError as err:
            return err.status_code, err.body["message"] if isinstance(err.body, dict) else str(err.body)
        return 200, ""

    corrupt = data_url(b"\x89PNG\r\n\x1a\n" + os.urandom(200), "image/png")
    cases = {
        "corrupt image": (user(image_part(corrupt)), 400, "cannot decode the image"),
        "bad base64": (user(image_part("data:image/png;base64,@@not-base64@@")), 400, "malformed data URL"),
        "no base64 marker": (user(image_part("data:image/png,abc")), 400, "malformed data URL"),
        "remote url": (user(image_part("https://example.com/cat.png")), 400, "not fetched"),
        "outside media root": (user(image_part("file:///etc/hostname")), 403, "outside the media root"),
        "absolute path outside": (user(image_part("/etc/hostname")), 403, "outside the media root"),
        "dot-dot escape": (user(image_part(f"file://{media_root}/../secret.png")), 403, "outside the media root"),
        "symlink escape": (user(image_part(f"file://{media_root}/link-out.png")), 403, "outside the media root"),
        "image too large": (user(image_part(png_url(6, size=100))), 400, "max_image_pixels=6400 (--max-image-pixels)"),
        "clip too long": (user(video_part(f"file://{media_root}/long.webm")), 400, "max_clip_frames=40 (--max-clip-frames)"),
        "corrupt clip": (user(video_part(data_url(b"\x1aE\xdf\xa3" + os.urandom(300), "video/webm"))), 400,
                         "cannot decode video"),
        "unknown part": (user({"type": "input_audio", "input_audio": {}}), 400, "unsupported content part"),
    }
    for name, (messages, status, words) in cases.items():
        got, message = status_of(messages)
        assert (got, words in message) == (status, True), (name, got, message)
        assert "messages[0].content[0]" in message, name  # the offending part is named
    assert status_of(user(), max_tokens=65) == (400, "max_tokens=65 is more than the server's limit max_tokens=64 (--max-tokens)")
    assert status_of(user(text="x" * 4_000_000))[0] == 413
    assert "max_body_bytes=3000000 (--max-body-bytes)" in status_of(user(text="x" * 4_000_000))[1]
    assert status_of(user(), n=2)[0] == 400
    not_json = httpx.post(url + "/v1/chat/completions", content=b"{nope", headers={"Authorization": f"Bearer {KEY}"})
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.NotFoundError):  # a model this server does not serve
        client.chat.completions.create(model="gpt-4o", messages=user(), max_tokens=4)
    # Files inside the media root are read; the server is still answering.
    inside = ask(client, user(image_part(f"file://{media_root}/inside.png")), max_tokens=4)
    assert inside.usage.completion_tokens > 0
    assert ask(client, user(image_part(str(media_root / "inside.png"))), max_tokens=4).usage.completion_tokens > 0
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert "status=400" in log.read_text() and "status=403" in log.read_text()


def test_one_log_line_per_request(server, client):
    _, log = server
    ask(client, user(image_part(png_url(40))), max_tokens=3)
    lines = [line for line in log.read_text().splitlines() if "theworld.serve:" in line and "chatcmpl-" in line]
    last = lines[-1]
    for field in ("world=on", "status=200", "tokens_in=", "tokens_out=3", "queue_s=", "generate_s="):
        assert field in last, last
    ids = [line.split("chatcmpl-")[1].split()[0] for line in lines]
    assert len(ids) == len(set(ids))  # one line each


# ------------------------------------------------------------------------------------------------
# in-process: what needs the engine in a given state


def test_full_queue_answers_503_at_once(reference):
    from fastapi.testclient import TestClient

    from theworld.serving.api import ServerState, create_app
    from theworld.serving.engine import Engine, GenerationRequest, SamplingParams

    model, processor = reference
    engine = Engine(model, processor, max_batch_size=1, max_queue=1)  # never started: nothing leaves the queue
    engine.submit(GenerationRequest(user(), SamplingParams(), lambda event: None))
    with TestClient(create_app(ServerState(engine, MODEL))) as http:
        started = time.monotonic()
        r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": user(), "max_tokens": 4})
        assert time.monotonic() - started < 5
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "queue_full" and "--max-queue 1" in r.json()["error"]["message"]


def test_serve_refuses_a_public_bind_without_a_key(served_model_dir, capsys, monkeypatch):
    from theworld.cli.main import main

    monkeypatch.delenv("THEWORLD_API_KEY", raising=False)
    assert main(["serve", str(served_model_dir), "--host", "0.0.0.0"]) == 2
    assert "no API key is set" in capsys.readouterr().err


def test_stop_strings_end_the_answer_and_never_reach_the_client(client):
    whole = ask(client, user(image_part(png_url(41))), max_tokens=12).choices[0].message.content
    assert len(whole) > 4
    stop = whole[3:5]
    cut = ask(client, user(image_part(png_url(41))), max_tokens=12, stop=[stop])
    assert cut.choices[0].message.content == whole[: whole.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = ask(client, user(image_part(png_url(41))), max_tokens=12, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == whole[: whole.index(stop)]


def test_seeded_sampling_is_reproducible(client):
    messages = user(image_part(png_url(42)))
    a, b = (client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=1.5, seed=7)
            for _ in range(2))  # fmt: skip
    assert a.choices[0].message.content == b.choices[0].message.content
    others = {client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=1.5, seed=s)
              .choices[0].message.content for s in (8, 9)}  # fmt: skip
    assert others | {a.choices[0].message.content} != {a.choices[0].message.content}  # it really samples


def test_readme_client_example_runs_against_the_server(server, media_root, tmp_path):
    """The README's `openai` example, verbatim but for the address, key and model name of this server."""
    import re
    import subprocess
    import sys

    from .conftest import REPO

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    (example,) = [b for b in blocks if "OpenAI(" in b]
    url, _ = server
    for old, new in [("http://127.0.0.1:8000/v1", url + "/v1"), ('api_key="none"', f'api_key="{KEY}"'),
                     ('model="finetune"', f'model="{MODEL}"')]:  # fmt: skip
        assert old in example
        example = example.replace(old, new)
    write_video(tmp_path / "clip.mp4", moving_frames(9, size=32, seed=9), fps=10)
    (tmp_path / "example.py").write_text(example)
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
