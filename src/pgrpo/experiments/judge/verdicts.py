"""Verdicts: from two task rewards, or from an LLM judge's answer (token probabilities, JSON, or a leading letter).

An LLM judge sees the two responses as "A" (shown first) and "B" and may answer "T" for a tie; its
*shown* verdict is "A", "B", "tie" or "unparseable". :func:`run_verdict` maps it back to the runs:
"a" (run A's response is better), "b", "tie" or "unparseable".
"""

from __future__ import annotations

import json
import math
import string

TIE_TOLERANCE = 1e-9
VERDICTS = ("a", "b", "tie", "unparseable")
SHOWN_CHOICES = {"A": "A", "B": "B", "T": "tie", "TIE": "tie"}  # what a judge may answer -> shown verdict
EDGES = string.punctuation + string.whitespace


def reward_verdict(reward_a: float, reward_b: float) -> str:
    """'a' when reward_a > reward_b + TIE_TOLERANCE, 'b' in the mirror case, else 'tie'; 'unparseable' for NaN/inf."""
    if not (math.isfinite(reward_a) and math.isfinite(reward_b)):
        return "unparseable"
    if reward_a > reward_b + TIE_TOLERANCE:
        return "a"
    if reward_b > reward_a + TIE_TOLERANCE:
        return "b"
    return "tie"


def choice_of(word: str) -> str | None:
    """'A', 'B' or 'tie' for a word naming a choice ("A", " b", "**T**", "(A).", "Tie"), else None."""
    return SHOWN_CHOICES.get(word.strip(EDGES).upper())


def letter_verdict(answer: str) -> str:
    """The choice an answer starts with, or 'unparseable'.

    The first word must name a choice (A, B, T or "tie", in any case, inside any markdown or brackets) and
    stand alone on the first line or end in punctuation: "B", "**A**", "(B).", "A: it names jazz",
    "T\\nboth fit". Anything else is unparseable: "A good answer would ...", "Response B", "".
    """
    lines = answer.strip().splitlines()
    words = lines[0].split() if lines else []
    if not words:
        return "unparseable"
    first = words[0]
    choice = choice_of(first)
    if choice is None or (len(words) > 1 and first[-1] not in string.punctuation):
        return "unparseable"
    return choice


def logprob_verdict(top_logprobs: list[tuple[str, float]]) -> tuple[str, float | None]:
    """(shown verdict, its probability) from the alternatives ``(token, logprob)`` for the answer's first token.

    The probability of each choice sums its tokens (" A" and "A" are both A); the verdict is the most
    probable choice (A and B equally most probable: a tie), and the confidence the highest probability
    among the three choices. No choice among the alternatives: ('unparseable', None).
    """
    mass = {"A": 0.0, "B": 0.0, "tie": 0.0}
    for token, logprob in top_logprobs:
        choice = choice_of(token)
        if choice is not None:
            mass[choice] += math.exp(logprob)
    total = sum(mass.values())
    if total == 0.0:
        return "unparseable", None
    verdict = max(mass, key=mass.__getitem__)
    if verdict != "tie" and mass["A"] == mass["B"]:
        verdict = "tie"
    return verdict, max(mass.values()) / total


def json_verdict(answer: str) -> str | None:
    """The shown verdict of a structured answer ``{"verdict": "A" | "B" | "T"}`` ('unparseable' for another
    value); None when the answer is not a JSON object, i.e. the server ignored the requested format."""
    try:
        parsed = json.loads(answer)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    return choice_of(str(parsed.get("verdict", ""))) or "unparseable"


def run_verdict(shown: str, a_shown_first: bool) -> str:
    """The verdict for the runs of a shown verdict: 'A' is run A's response when A was shown first, else run B's."""
    if shown not in ("A", "B"):
        return shown  # 'tie' and 'unparseable' do not depend on the order
    return "a" if (shown == "A") == a_shown_first else "b"
