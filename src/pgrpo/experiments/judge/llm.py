"""An LLM as judge, over any OpenAI-compatible chat-completions endpoint, through the ``openai`` client.

    judge = LLMJudge("http://127.0.0.1:8000")          # the server's only model; key from $OPENAI_API_KEY if set
    judgements = judge_pairs(judge, prompts, completions_a, completions_b, seed=0)

How a verdict is read (``method``), best first; ``auto`` settles on the first that the server honours
and keeps it for every later pair:

* ``logprobs``: ask for the first answer token's top alternatives (``logprobs=True, top_logprobs=k``)
  and take the more probable of A / B / T, with its probability as the confidence. Hosted APIs and
  vLLM return them; a server that ignores the option answers without them, one that refuses it
  answers HTTP 400/422: both fall through.
* ``structured``: ask for ``{"verdict": "A" | "B" | "T"}`` through ``response_format`` (a JSON schema
  with an enum). A server that ignores it answers in plain text, which is read by the next method.
* ``letter``: the choice the plain answer starts with (see :func:`letter_verdict`).

``transformers serve`` (5.24) accepts ``logprobs``, ``top_logprobs`` and ``response_format`` but ignores
them (a warning in its log), so ``auto`` spends two requests on the first pair and reads letters.
The API key is read from the environment variable ``api_key_env`` and sent only when set
(otherwise no Authorization header at all); it is never printed, logged or written.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat.chat_completion import Choice

from pgrpo.experiments.judge.verdicts import json_verdict, letter_verdict, logprob_verdict, run_verdict

METHODS = ("auto", "logprobs", "structured", "letter")
TOP_LOGPROBS = 5
JUDGE_SYSTEM = "You are a fair, careful judge of assistant responses. You answer with a single letter."
JUDGE_TEMPLATE = """A user sent the request below, and two assistants answered it. The request says who the user is.
Decide which response better fits this particular user: their tastes, style and needs, not just general quality.

[Request]
{prompt}

[Response A]
{first}

[Response B]
{second}

Which response better fits this user? Answer with exactly one letter: A or B (or T if they are equally good)."""
VERDICT_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"verdict": {"type": "string", "enum": ["A", "B", "T"]}},
            "required": ["verdict"],
            "additionalProperties": False,
        },
    },
}


def api_base_url(url: str) -> str:
    """The client's base URL ``{server}/v1`` for a server URL given with or without ``/v1``; a URL ending in
    ``/chat/completions`` gives the prefix before it (for APIs whose prefix is not ``/v1``)."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"LLM judge URL must start with http:// or https://, got {url!r}.")
    if base.endswith("/chat/completions"):
        return base.removesuffix("/chat/completions")
    return f"{base.removesuffix('/v1')}/v1"


class UnsupportedRequest(RuntimeError):
    """The server refused a request (HTTP 400/422), e.g. for an option it does not support."""


@dataclass
class Verdict:
    """A judge's verdict on one shown pair: 'A', 'B', 'tie' or 'unparseable', its raw answer and its confidence."""

    shown: str
    answer: str
    confidence: float | None = None


class LLMJudge:
    """Asks an OpenAI-compatible server which of two shown responses better fits the user (module docstring).

    ``model`` None: the only model the server lists. ``requests`` counts chat requests sent (probes included).
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 2,
        max_tokens: int = 16,
        method: str = "auto",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"LLM verdict method must be one of {', '.join(METHODS)}, got {method!r}.")
        self.base_url = api_base_url(url)
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env, "")
        self.api_key_used = bool(key)
        # The client insists on a key; without one, every request explicitly omits the Authorization header.
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=key or "unused", timeout=timeout, max_retries=max_retries
        )
        self.headers: dict[str, Any] = {} if key else {"Authorization": openai.omit}
        self.max_tokens = max_tokens
        self.method = method
        self.requests = 0
        self.model = model or self.only_model()

    def only_model(self) -> str:
        """The id of the only model the server lists (``client.models.list()``)."""
        models = [entry.id for entry in self._call(self.client.models.list, extra_headers=self.headers)]
        if len(models) != 1:
            raise ValueError(
                f"Pass --llm_model: the server at {self.base_url} lists {len(models)} models {models[:10]}."
            )
        return models[0]

    def _call(self, function: Callable[..., Any], **kwargs: Any) -> Any:
        """``function(**kwargs)`` with the client's errors turned into messages that name the server and the fix."""
        try:
            return function(**kwargs)
        except openai.APIConnectionError as error:  # refused, unreachable or timed out, after the client's retries
            raise ConnectionError(
                f"Could not reach the LLM judge at {self.base_url} ({type(error).__name__}: {error}). Is the server "
                "running (e.g. `transformers serve MODEL --host 127.0.0.1 --port 8000`) and is --llm_url right?"
            ) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            raise RuntimeError(
                f"The LLM judge at {self.base_url} refused the credentials (HTTP {error.status_code}); "
                f"is the API key set in ${self.api_key_env}?"
            ) from None
        except (openai.BadRequestError, openai.UnprocessableEntityError) as error:
            raise UnsupportedRequest(
                f"The LLM judge at {self.base_url} refused the request (HTTP {error.status_code}: {error.message})."
            ) from None
        except openai.APIStatusError as error:
            raise RuntimeError(
                f"The LLM judge at {self.base_url} answered HTTP {error.status_code}: {error.message}"
            ) from None

    def _ask(self, messages: list[dict[str, str]], method: str) -> Choice:
        """One chat completion (greedy) with the options of ``method``; its first choice."""
        options: dict[str, Any] = {}
        if method == "logprobs":
            options = {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        elif method == "structured":
            options = {"response_format": VERDICT_FORMAT}
        self.requests += 1
        response = self._call(
            self.client.chat.completions.create,
            model=self.model,
            messages=messages,
            max_completion_tokens=self.max_tokens,
            temperature=0.0,
            extra_headers=self.headers,
            **options,
        )
        if not getattr(response, "choices", None):
            raise RuntimeError(f"The LLM judge at {self.base_url} answered without choices: {response!r:.300}")
        return response.choices[0]

    @staticmethod
    def _read(choice: Choice, method: str) -> Verdict | None:
        """The verdict in an answer read by ``method``; None when the server ignored the method's option."""
        answer = choice.message.content or ""
        if method == "logprobs":
            tokens = choice.logprobs.content if choice.logprobs else None
            if not tokens:
                return None
            alternatives = tokens[0].top_logprobs or [tokens[0]]
            shown, confidence = logprob_verdict([(entry.token, entry.logprob) for entry in alternatives])
            return Verdict(shown, answer, confidence)
        if method == "structured":
            shown = json_verdict(answer)
            return None if shown is None else Verdict(shown, answer)
        return Verdict(letter_verdict(answer), answer)

    def judge(self, prompt: str, first: str, second: str) -> Verdict:
        """The verdict on ``first`` (shown as A) vs ``second`` (shown as B) for ``prompt``."""
        content = JUDGE_TEMPLATE.format(
            prompt=prompt.strip(), first=first.strip() or "(empty)", second=second.strip() or "(empty)"
        )
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]
        if self.method != "auto":  # fixed: an answer without what the method reads is unparseable
            choice = self._ask(messages, self.method)
            return self._read(choice, self.method) or Verdict("unparseable", choice.message.content or "")
        for method in ("logprobs", "structured"):
            try:
                choice = self._ask(messages, method)
            except UnsupportedRequest:
                continue
            verdict = self._read(choice, method)
            if verdict is not None:
                self.method = method
                return verdict
            if method == "structured":  # format ignored: a plain answer to the same question
                self.method = "letter"
                return self._read(choice, "letter")
        self.method = "letter"
        return self._read(self._ask(messages, "letter"), "letter")


def judge_pairs(
    judge: LLMJudge, prompts: list[str], completions_a: list[str], completions_b: list[str], seed: int
) -> list[dict[str, Any]]:
    """Per pair: ``{"verdict", "a_shown_first", "judge_answer", "judge_confidence"}``, verdict in run terms.

    The order shown is drawn per pair from ``random.Random(seed)`` (position bias cancels on average).
    Identical completions are a tie without a request (``judge_answer`` None): no judge can prefer one
    copy, and asking would only measure its position bias.
    """
    rng = random.Random(seed)
    judgements: list[dict[str, Any]] = []
    for prompt, answer_a, answer_b in zip(prompts, completions_a, completions_b, strict=True):
        a_shown_first = rng.random() >= 0.5  # drawn for every pair: a pair's order does not depend on the others
        if answer_a.strip() == answer_b.strip():
            judgements.append(
                {"verdict": "tie", "a_shown_first": a_shown_first, "judge_answer": None, "judge_confidence": None}
            )
            continue
        first, second = (answer_a, answer_b) if a_shown_first else (answer_b, answer_a)
        verdict = judge.judge(prompt, first, second)
        judgements.append(
            {
                "verdict": run_verdict(verdict.shown, a_shown_first),
                "a_shown_first": a_shown_first,
                "judge_answer": verdict.answer,
                "judge_confidence": verdict.confidence,
            }
        )
    return judgements
