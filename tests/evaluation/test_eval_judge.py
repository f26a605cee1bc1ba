"""The OpenAI-compatible judge against a tiny local server: request shape, verdicts, bad replies."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

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
        data = body.encode()
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
