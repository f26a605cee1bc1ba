"""An LLM judge for free-text answers, over any OpenAI-compatible `/chat/completions` server.

SpatialRGPT-Bench's qualitative answers are sentences ("No, Region [0] is not behind Region
[1].") that no string match scores fairly; the published protocol uses an LLM judge. This client
uses only the standard library (urllib), so a local vLLM / llama.cpp server or a hosted API can
judge without a new dependency. The judge must answer `{"correct": true|false, "reason": ...}`;
anything else raises `JudgeError` carrying the raw reply, never a guessed verdict, so a flaky
judge cannot quietly bias a result.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You grade answers to questions about an image. You are given the question, the reference "
    "answer and a model's answer. The model's answer is correct when it states the same fact as "
    "the reference (wording may differ; a yes/no question needs the same polarity; a comparison "
    "must name the same object). Reply with a JSON object only: "
    '{"correct": true or false, "reason": "<one short sentence>"}.'
)


class JudgeError(TheWorldUserError):
    """The judge could not be reached or did not reply in the required form; `raw` keeps its text."""

    def __init__(self, message: str, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class Verdict:
    """The judge's decision on one answer, with its reason and the raw reply for auditing."""

    correct: bool
    reason: str
    raw: str


def _strip_fence(text: str) -> str:
    """Some servers wrap JSON in a ```json fence despite json_object mode; unwrap only that."""
    text = text.strip()
    if text.startswith("```") and text.endswith("```"):
        text = text[3:-3].strip()
        if text.startswith("json"):
            text = text[4:].strip()
    return text


def parse_verdict(content: str) -> Verdict:
    """Read the judge's message content; raise `JudgeError` (with the text) unless it is exact."""
    try:
        data = json.loads(_strip_fence(content))
    except json.JSONDecodeError as err:
        raise JudgeError(f"judge reply is not JSON ({err}): {content[:200]!r}", raw=content) from err
    if not isinstance(data, dict) or not isinstance(data.get("correct"), bool):
        raise JudgeError(f'judge reply lacks a boolean "correct": {content[:200]!r}', raw=content)
    reason = data.get("reason", "")
    return Verdict(correct=data["correct"], reason=str(reason), raw=content)


class OpenAIJudge:
    """Judges (question, reference, prediction) triples with a chat model at `base_url`.

    `base_url` is the API root that `/chat/completions` is appended to (e.g.
    `http://127.0.0.1:8000/v1`). Temperature 0 keeps verdicts as repeatable as the server allows.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_tokens: int = 256,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_tokens = max_tokens

    def build_request(self, question: str, reference: str, prediction: str) -> dict[str, Any]:
        """The request body; separate so tests and logs can see exactly what the judge was asked."""
        user = f"Question: {question}\nReference answer: {reference}\nModel answer: {prediction}"
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "response_format": {"type": "json_object"},
        }

    def _post(self, body: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", errors="replace")
            raise JudgeError(f"judge at {self.url} returned HTTP {err.code}: {detail[:200]}", raw=detail) from err
        except (urllib.error.URLError, TimeoutError) as err:
            raise JudgeError(f"judge at {self.url} unreachable: {err}") from err

    def judge(self, question: str, reference: str, prediction: str) -> Verdict:
        """One verdict; raises `JudgeError` on transport errors or a malformed reply."""
        raw = self._post(self.build_request(question, reference, prediction))
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise JudgeError(f"judge response is not a chat completion: {raw[:200]!r}", raw=raw) from err
        if not isinstance(content, str):
            raise JudgeError(f"judge message content is not text: {raw[:200]!r}", raw=raw)
        verdict = parse_verdict(content)
        logger.debug("judge verdict %s: %s", verdict.correct, verdict.reason)
        return verdict
