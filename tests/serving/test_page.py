"""The web page at `/`, in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Playwright's own browser downloads are never used: it launches the system Chromium through
`executable_path`. `.ci/run` installs Chromium when it is missing; without it this test skips
locally and fails under CI.
"""

from __future__ import annotations

import base64
import io
import os
import shutil

import pytest

from theworld.testing.inputs import moving_frames, random_image, write_video

from .conftest import live_server

KEY = "page-key-19c2"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_server(served_model_dir, tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing under CI: .ci/run must install it")
        pytest.skip("no chromium on this machine (apt-get install -y chromium; .ci/run installs it)")
    log = tmp_path_factory.mktemp("page-log") / "serve.log"
    with live_server(served_model_dir, log, "--api-key", KEY, "--max-tokens", "24") as url:
        yield url


@pytest.fixture(scope="module")
def browser(page_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def api_stream(url: str, clip: str, question: str, world: str) -> list[str]:
    """The content deltas the API streams for the request the page sends."""
    import json

    import httpx2

    video = "data:video/webm;base64," + base64.b64encode(open(clip, "rb").read()).decode()
    body = {"model": "tiny-world", "stream": True, "world": world, "max_tokens": 24,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video}},
                                                      {"type": "text", "text": question}]}]}  # fmt: skip
    deltas = []
    with httpx2.stream("POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                       timeout=120) as response:  # fmt: skip
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    if choice["delta"].get("content"):
                        deltas.append(choice["delta"]["content"])
    return deltas


def test_upload_a_clip_ask_and_see_both_answers_stream(page_server, browser, tmp_path):
    clip = write_video(tmp_path / "ball.webm", moving_frames(17, size=64, seed=3), fps=8)
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_server + "/")
    page.wait_for_function("document.getElementById('model').textContent === 'enter the API key'")
    page.fill("#key", KEY)
    page.dispatch_event("#key", "change")
    page.wait_for_function("document.getElementById('model').textContent === 'tiny-world'")
    page.set_input_files("#file", clip)
    page.wait_for_selector("#preview video")
    page.fill("#question", "Which way is the ball moving?")
    page.check("#compare")
    page.click("#ask")
    page.wait_for_function("['answer-on', 'answer-off'].every(id => document.getElementById(id).dataset.done === 'true')",
                           timeout=120_000)  # fmt: skip
    chunks = {}
    for pane in ("on", "off"):
        answer = page.locator(f"#answer-{pane}")
        # The page shows what the API streams for the same request, chunk by chunk.
        expected = api_stream(page_server, clip, "Which way is the ball moving?", world=pane)
        assert answer.inner_text() == "".join(expected) and answer.inner_text().strip(), pane
        chunks[pane] = int(answer.get_attribute("data-chunks"))
        assert chunks[pane] == len(expected), pane
        assert "tokens in" in page.locator(f"#pane-{pane} .meta").inner_text()
    assert max(chunks.values()) > 1  # really streamed, not one block
    assert page.locator("#pane-off").is_visible()
    assert all(url.startswith(page_server) for url in requests)  # no external assets
    target = os.environ.get("THEWORLD_PAGE_SCREENSHOT")  # docs/serving.png is made this way
    page.screenshot(path=target or str(tmp_path / "page.png"), full_page=True)

    # Dropping an image replaces the clip, and a wrong key shows the server's message.
    buffer = io.BytesIO()
    random_image(5, 40).save(buffer, format="PNG")
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "photo.png", {type: "image/png"}));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        base64.b64encode(buffer.getvalue()).decode(),
    )
    page.wait_for_selector("#preview img")
    page.uncheck("#compare")
    page.fill("#key", "wrong")
    page.click("#ask")
    page.wait_for_function("document.getElementById('answer-on').dataset.done === 'true'")
    assert "API key" in page.locator("#answer-on").inner_text()
    page.close()
