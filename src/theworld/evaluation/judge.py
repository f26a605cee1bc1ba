"""An LLM judge for free-text answers, over any OpenAI-compatible `/chat/completions` server (urllib only).

A reply that is not `{"correct": true|false, "reason": ...}` raises `JudgeError`, never a guessed
verdict; credentials never reach a message or a log (`redact`).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import urllib.error
import urllib.parse
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


REDACTED = "[REDACTED]"
_SECRET_QUERY = re.compile(r"(key|token|secret|password|passwd|auth|signature|sig)", re.IGNORECASE)
# `Authorization: Bearer abc`, `"authorization": "Basic abc"`, `Bearer abc` alone
_AUTH_VALUE = re.compile(r"""(authorization["']?\s*[:=]\s*["']?)(?:(bearer|basic|token)\s+)?[^\s"',;}]+""", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with every given secret and any Authorization/Bearer value replaced by [REDACTED]."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _AUTH_VALUE.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + REDACTED, text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def split_url_credentials(url: str) -> tuple[str, str | None, str | None, str]:
    """(url without user:password, user, password, url safe to print: userinfo and secret query values as ***)."""
    parts = urllib.parse.urlsplit(url)
    user, password = parts.username, parts.password
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    clean = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    shown_query = "&".join(f"{k}=***" if _SECRET_QUERY.search(k) else f"{k}={v}" for k, v in query)
    shown_netloc = ("***@" if user is not None or password is not None else "") + netloc
    shown = urllib.parse.urlunsplit(parts._replace(netloc=shown_netloc, query=shown_query))
    return clean, user, password, shown


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
    return Verdict(correct=data["correct"], reason=str(data.get("reason", "")), raw=content)


class OpenAIJudge:
    """Judges answers with a chat model at `base_url` (the API root); temperature 0 keeps verdicts repeatable."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0, max_tokens: int = 256
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)  # the path gets /chat/completions, before any query
        full = urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))
        url, user, password, shown = split_url_credentials(full)
        if (user or password) and api_key:
            raise TheWorldUserError(
                f"the judge at {shown} got credentials twice (user:password in the URL and an API key): give one"
            )
        self.url, self.shown_url = url, shown  # requests go to `url` (no user:password), messages print `shown_url`
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_tokens = max_tokens
        user, password = urllib.parse.unquote(user or ""), urllib.parse.unquote(password or "")
        self._basic = base64.b64encode(f"{user}:{password}".encode()).decode() if user or password else None
        query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)
        query_secrets = tuple(v for k, v in query if _SECRET_QUERY.search(k))
        self._secrets = tuple(s for s in (api_key, parts.password, password, self._basic, *query_secrets) if s)

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
        auth = f"Bearer {self.api_key}" if self.api_key else f"Basic {self._basic}" if self._basic else None
        headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as err:
            detail = redact(err.read().decode("utf-8", errors="replace"), self._secrets)
            raise JudgeError(f"judge at {self.shown_url} returned HTTP {err.code}: {detail[:200]}", raw=detail) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            # the cause is dropped (`from None`): urllib's own texts may quote the URL
            raise JudgeError(f"judge at {self.shown_url} unreachable: {redact(str(err), self._secrets)}") from None

    def judge(self, question: str, reference: str, prediction: str) -> Verdict:
        """One verdict; raises `JudgeError` on transport errors or a malformed reply."""
        raw = self._post(self.build_request(question, reference, prediction))
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raw = redact(raw, self._secrets)
            raise JudgeError(f"judge response is not a chat completion: {raw[:200]!r}", raw=raw) from None
        if not isinstance(content, str):
            raw = redact(raw, self._secrets)
            raise JudgeError(f"judge message content is not text: {raw[:200]!r}", raw=raw)
        try:
            verdict = parse_verdict(content)
        except JudgeError as err:
            raise JudgeError(redact(str(err), self._secrets), raw=redact(content, self._secrets)) from None
        logger.debug("judge verdict %s: %s", verdict.correct, verdict.reason)
        return verdict
