"""A minimal OpenAI-compatible server for tests (stdlib ``http.server`` in a thread).

It stands in for a remote LLM API, which cannot run here: it reads the two responses out of the
judge's prompt, picks one with a scripted rule, and answers in the way a kind of server does:
with the first token's alternatives (``logprobs``), with JSON (``response_format``), or in plain
text. Options it does not support are ignored, as ``transformers serve`` does, or refused with
HTTP 400, as some APIs do. It records every request (path, Authorization header, body).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The stub judge's rule: (request, first response shown, second response shown) -> "A", "B", "T" or None (no idea).
Preference = Callable[[str, str, str], str | None]
PICKED_PROBABILITY = 0.8  # probability of the picked letter in a logprobs answer


def prefers_good(request: str, first: str, second: str) -> str | None:
    """The response containing the word "good" (T when both or neither do); no idea when one contains "???"."""
    if "???" in first or "???" in second:
        return None
    good = ["good" in first.split(), "good" in second.split()]
    return "T" if good[0] == good[1] else ("A" if good[0] else "B")


def shown_responses(content: str) -> tuple[str, str, str]:
    """(request, response A, response B) out of the judge's prompt."""
    request = content.split("[Request]\n", 1)[1].split("\n\n[Response A]\n", 1)[0]
    first = content.split("[Response A]\n", 1)[1].split("\n\n[Response B]\n", 1)[0]
    second = content.split("[Response B]\n", 1)[1].split("\n\nWhich response", 1)[0]
    return request, first, second


class OpenAIStub:
    """``with OpenAIStub(...) as stub: stub.url`` serves ``/v1/models`` and ``/v1/chat/completions``.

    logprobs / structured: whether ``logprobs`` / ``response_format`` are honoured; unsupported options are
    ignored, or refused with HTTP 400 when ``refuse_unsupported``. ``api_key``: answer 401 unless it is sent.
    """

    def __init__(
        self,
        prefer: Preference = prefers_good,
        logprobs: bool = False,
        structured: bool = False,
        refuse_unsupported: bool = False,
        models: tuple[str, ...] = ("stub-judge",),
        api_key: str | None = None,
    ) -> None:
        self.prefer, self.logprobs, self.structured = prefer, logprobs, structured
        self.refuse_unsupported, self.models, self.api_key = refuse_unsupported, models, api_key
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def send_json(self, payload: dict[str, Any], status: int = 200) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_request(self, body: dict[str, Any] | None) -> None:
                authorization = self.headers.get("Authorization")
                stub.requests.append({"path": self.path, "authorization": authorization, "body": body})
                if stub.api_key is not None and authorization != f"Bearer {stub.api_key}":
                    self.send_json({"error": {"message": "invalid api key", "type": "auth"}}, 401)
                elif self.path == "/v1/models":
                    self.send_json({"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]})
                elif self.path == "/v1/chat/completions" and body is not None:
                    status, payload = stub.complete(body)
                    self.send_json(payload, status)
                else:
                    self.send_json({"error": {"message": f"no route {self.path}"}}, 404)

            def do_GET(self) -> None:
                self.handle_request(None)

            def do_POST(self) -> None:
                self.handle_request(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, chat completion or error) for a request body."""
        unsupported = [
            name
            for name, supported in (("logprobs", self.logprobs), ("response_format", self.structured))
            if name in body and not supported
        ]
        if unsupported and self.refuse_unsupported:
            return 400, {"error": {"message": f"unsupported: {unsupported}", "type": "invalid_request_error"}}
        letter = self.prefer(*shown_responses(body["messages"][-1]["content"]))
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if "response_format" in body and self.structured:
            content = json.dumps({"verdict": letter or "unsure"})
        elif letter is None:
            content = "Hmm, hard to say."
        else:
            content = f"{letter}. That one fits the user better." if letter != "T" else "T. Both fit equally."
        if body.get("logprobs") and self.logprobs:
            first_token = letter or "Hmm"
            others = [token for token in ("A", "B", "T") if token != letter] if letter else ["The", "I"]
            alternatives = [(first_token, PICKED_PROBABILITY)] + [(t, (1 - PICKED_PROBABILITY) / 2) for t in others]
            top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in alternatives]
            choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top[: body.get("top_logprobs", 1)]}]}
        choice["message"] = {"role": "assistant", "content": content}
        completion = {"id": "stub", "object": "chat.completion", "created": 0, "model": body["model"]}
        return 200, {**completion, "choices": [choice]}

    def __enter__(self) -> OpenAIStub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
