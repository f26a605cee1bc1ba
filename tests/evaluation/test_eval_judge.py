"""The OpenAI-compatible judge against a tiny local server: request shape, verdicts, bad replies."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from theworld.errors import TheWorldUserError
from theworld.evaluation.judge import JudgeError, OpenAIJudge, parse_verdict


class _Server(HTTPServer):
    replies: list[tuple[int, str]]  # (status, body) served in order
    received: list[dict]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # http.server's method naming
        length = int(self.headers["Content-Length"])
        self.server.received.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(self.rfile.read(length))}
        )
        status, body = self.server.replies.pop(0)
        data = body.replace("{auth}", self.headers.get("Authorization") or "").encode()  # a server echoing the header
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


def _completion(content: str) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.replies, srv.received = [], []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _judge(srv: _Server) -> OpenAIJudge:
    return OpenAIJudge(f"http://127.0.0.1:{srv.server_port}/v1/", "judge-model", api_key="k", timeout=5)


def test_judge_request_and_verdicts(server: _Server) -> None:
    server.replies = [
        (200, _completion('{"correct": true, "reason": "same polarity"}')),
        (200, _completion('```json\n{"correct": false, "reason": "says left, reference says right"}\n```')),
    ]
    judge = _judge(server)
    ok = judge.judge("Is Region [0] behind Region [1]?", "No.", "No, it is in front.")
    assert ok.correct is True and ok.reason == "same polarity"
    assert ok.raw == '{"correct": true, "reason": "same polarity"}'
    assert judge.judge("Which is left?", "Region [0]", "Region [1]").correct is False

    sent = server.received[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer k"
    body = sent["body"]
    assert body["model"] == "judge-model" and body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0
    assert "Reference answer: No." in body["messages"][-1]["content"]


@pytest.mark.parametrize(
    "content", ["Yes, the answer is correct.", '{"correct": "yes"}', '{"reason": "no verdict"}', "[true]"]
)
def test_malformed_judge_reply_is_an_error_with_the_raw_text(server: _Server, content: str) -> None:
    server.replies = [(200, _completion(content))]
    with pytest.raises(JudgeError) as info:
        _judge(server).judge("q", "a", "p")
    assert info.value.raw == content


def test_judge_http_error_and_non_completion(server: _Server) -> None:
    server.replies = [(500, '{"error": "overloaded"}'), (200, '{"object": "list"}')]
    judge = _judge(server)
    with pytest.raises(JudgeError, match="HTTP 500") as info:
        judge.judge("q", "a", "p")
    assert "overloaded" in (info.value.raw or "")
    with pytest.raises(JudgeError, match="not a chat completion"):
        judge.judge("q", "a", "p")


def test_unreachable_judge() -> None:
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    port = srv.server_port
    srv.server_close()  # nothing listens on this port any more
    with pytest.raises(JudgeError, match="unreachable"):
        OpenAIJudge(f"http://127.0.0.1:{port}", "m", timeout=2).judge("q", "a", "p")


def test_parse_verdict_accepts_only_boolean_correct() -> None:
    assert parse_verdict('{"correct": false}').correct is False
    with pytest.raises(JudgeError):
        parse_verdict('{"correct": 1}')


SECRET = "sk-live-0123456789abcdef"


def test_error_reply_echoing_the_authorization_header_never_shows_the_key(server: _Server) -> None:
    server.replies = [
        (401, '{"error": "invalid key", "request": {"headers": {"Authorization": "{auth}"}}}'),
        (200, '{"echo": "{auth}"}'),
        (200, _completion("not json; you sent {auth}")),
    ]
    judge = OpenAIJudge(f"http://127.0.0.1:{server.server_port}/v1", "m", api_key=SECRET, timeout=5)
    for expected in ("HTTP 401", "not a chat completion", "judge reply is not JSON"):
        with pytest.raises(JudgeError, match=expected) as info:
            judge.judge("q", "a", "p")
        assert SECRET not in str(info.value) and SECRET not in (info.value.raw or "")
        assert "[REDACTED]" in str(info.value)
    assert [r["auth"] for r in server.received] == [f"Bearer {SECRET}"] * 3  # the server did get the key


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_printed(server: _Server) -> None:
    server.replies = [(200, _completion('{"correct": true}')), (403, '{"detail": "denied for {auth}"}')]
    url = f"http://alice:pa%3Ass@127.0.0.1:{server.server_port}/v1?api_key=QUERYSECRET&x=1"
    judge = OpenAIJudge(url, "m", timeout=5)
    assert judge.judge("q", "a", "p").correct is True
    import base64

    assert server.received[0]["auth"] == "Basic " + base64.b64encode(b"alice:pa:ss").decode()
    assert server.received[0]["path"] == "/v1/chat/completions?api_key=QUERYSECRET&x=1"
    with pytest.raises(JudgeError) as info:
        judge.judge("q", "a", "p")
    text = str(info.value) + (info.value.raw or "")
    for secret in ("pa%3Ass", "pa:ss", "QUERYSECRET", "alice", base64.b64encode(b"alice:pa:ss").decode()):
        assert secret not in text, secret
    assert f"http://***@127.0.0.1:{server.server_port}/v1/chat/completions" in str(info.value)
    # unreachable: the message shows the URL without its credentials either
    closed = HTTPServer(("127.0.0.1", 0), _Handler)
    port = closed.server_port
    closed.server_close()
    with pytest.raises(JudgeError, match=rf"judge at http://\*\*\*@127.0.0.1:{port}/v1/chat/completions unreachable") as info:
        OpenAIJudge(f"http://alice:pa%3Ass@127.0.0.1:{port}/v1", "m", timeout=2).judge("q", "a", "p")
    assert "pa%3Ass" not in str(info.value)
    with pytest.raises(TheWorldUserError, match="credentials twice"):
        OpenAIJudge(url, "m", api_key=SECRET)


def test_cli_eval_stderr_carries_neither_the_key_nor_url_credentials(world_dir, server: _Server, tmp_path, capsys, monkeypatch) -> None:
    """The issue's measurement: a judge that echoes the Authorization header in its 401 reply, and a
    --judge-url with user:password; the CLI's error output is checked for both."""
    from theworld.cli.main import main
    from theworld.testing.inputs import random_image

    random_image(5, size=32).save(tmp_path / "i.png")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"id": "f0", "question": "What is left?", "answer": "a ball", "image": "i.png"}) + "\n")
    server.replies = [(401, '{"error": {"message": "bad key", "echo": "Authorization: {auth}"}}')]
    monkeypatch.setenv("THEWORLD_JUDGE_API_KEY", SECRET)
    args = ["eval", "--model", world_dir, "--benchmark", "jsonl", "--data", str(tmp_path / "qa.jsonl"),
            "--output-dir", str(tmp_path / "run"), "--max-new-tokens", "2", "--judge-model", "m",
            "--judge-url", f"http://127.0.0.1:{server.server_port}/v1"]  # fmt: skip
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "[REDACTED]" in captured.err
    assert SECRET not in captured.err + captured.out
    monkeypatch.delenv("THEWORLD_JUDGE_API_KEY")
    server.replies = [(401, '{"error": "who is {auth}?"}')]
    args[-1] = f"http://bob:hunter2@127.0.0.1:{server.server_port}/v1"
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "***@127.0.0.1" in captured.err
    assert "hunter2" not in captured.err + captured.out and "Ym9iOmh1bnRlcjI" not in captured.err
