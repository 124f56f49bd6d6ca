"""The LLM judge: reading verdicts, mapping the shown A/B order back to the runs, the server fallbacks, the API key.

Servers here are ``OpenAIStub`` (tests/experiments/openai_stub.py), a local stand-in for a remote LLM API;
the real local server (`transformers serve` + SmolLM2) is exercised in test_judge.py.
"""

from __future__ import annotations

import math
import socket

import pytest

from pgrpo.experiments.judge.llm import LLMJudge, api_base_url, judge_pairs
from pgrpo.experiments.judge.verdicts import json_verdict, letter_verdict, logprob_verdict, reward_verdict, run_verdict
from tests.experiments.openai_stub import PICKED_PROBABILITY, OpenAIStub, shown_responses

SECRET = "sk-test-never-shown-0123456789"
OTHER_SECRET = "sk-other-key-never-sent-987654"

PROMPTS = [f"Eleanor, a retired judge, asks: question {i}?" for i in range(7)]
COMPLETIONS_A = ["a good answer", "a poor answer", "same words", "good and good", "meh", "??? noise", "good"]
COMPLETIONS_B = ["a poor answer", "a good answer", "same words", "also good", "bah", "good", "fine"]
# The stub prefers the response with the word "good", says T when both or neither have it, has no idea on "???";
# identical completions (pair 2) are a tie without a request.
EXPECTED = ["a", "b", "tie", "tie", "tie", "unparseable", "a"]
SWAPPED = ["b", "a", "tie", "tie", "tie", "unparseable", "b"]
ASKED = [0, 1, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("A", "A"), ("b.", "B"), ("(A)", "A"), ("**B**", "B"), ("T", "tie"), ("Tie.", "tie"), ("A: it names jazz", "A"),
        ("B.\nBecause the user likes rock", "B"), ("  A\n\nBecause", "A"),
        ("A good response would mention jazz", "unparseable"), ("Response B", "unparseable"),
        ("The answer is A", "unparseable"), ("", "unparseable"), ("Hmm, hard to say", "unparseable"),
        ("C", "unparseable"), ("AB", "unparseable"),
    ],
)  # fmt: skip
def test_letter_verdict(answer: str, verdict: str) -> None:
    assert letter_verdict(answer) == verdict


@pytest.mark.parametrize(
    ("alternatives", "verdict", "confidence"),
    [
        ([(" A", 0.6), ("B", 0.3), ("A", 0.05)], "A", 0.65 / 0.95),  # " A" and "A" are both A
        ([("B", 0.5), ("T", 0.4), ("The", 0.1)], "B", 0.5 / 0.9),
        ([("T", 0.7), ("A", 0.2)], "tie", 0.7 / 0.9),
        ([("A", 0.4), ("B", 0.4), ("T", 0.1)], "tie", 0.4 / 0.9),  # A and B equally probable
        ([("The", 0.6), ("**", 0.3)], "unparseable", None),
    ],
)
def test_logprob_verdict(alternatives: list[tuple[str, float]], verdict: str, confidence: float | None) -> None:
    shown, probability = logprob_verdict([(token, math.log(p)) for token, p in alternatives])
    assert shown == verdict
    assert probability == (None if confidence is None else pytest.approx(confidence))


def test_json_reward_and_run_verdicts_and_base_url() -> None:
    assert [json_verdict(text) for text in ('{"verdict": "B"}', '{"verdict": "T"}', '{"verdict": "C"}', "{}")] == [
        "B", "tie", "unparseable", "unparseable",
    ]  # fmt: skip
    assert [json_verdict(text) for text in ("A", "[1]", "A. it fits")] == [None, None, None]  # format ignored
    assert reward_verdict(0.5, 0.5 + 1e-12) == "tie" and reward_verdict(0.6, 0.5) == "a"
    assert reward_verdict(0.1, 0.5) == "b" and reward_verdict(float("nan"), 0.5) == "unparseable"
    assert [run_verdict("A", True), run_verdict("A", False), run_verdict("B", True), run_verdict("B", False)] == [
        "a", "b", "b", "a",
    ]  # fmt: skip
    assert run_verdict("tie", False) == "tie" and run_verdict("unparseable", True) == "unparseable"
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/", "http://h:1/v1/chat/completions"):
        assert api_base_url(url) == "http://h:1/v1"
    assert api_base_url("https://x/api/openai/chat/completions") == "https://x/api/openai"
    with pytest.raises(ValueError, match="http"):
        api_base_url("h:1")


@pytest.mark.parametrize(
    ("server", "method", "requests"),
    [
        ({"logprobs": True, "structured": True}, "logprobs", 6),  # a hosted API: one request per asked pair
        ({"structured": True, "refuse_unsupported": True}, "structured", 7),  # logprobs refused (HTTP 400) once
        ({}, "letter", 7),  # ignores both options, as transformers serve does: the format probe's answer is read
        ({"refuse_unsupported": True}, "letter", 8),  # refuses both, then asks plainly
    ],
    ids=["logprobs", "structured", "letter-ignored", "letter-refused"],
)
def test_verdicts_map_back_through_the_shown_order(server: dict, method: str, requests: int) -> None:
    with OpenAIStub(**server) as stub:
        judge = LLMJudge(stub.url, model="stub-judge")
        judgements = judge_pairs(judge, PROMPTS, COMPLETIONS_A, COMPLETIONS_B, seed=0)
        assert [j["verdict"] for j in judgements] == EXPECTED
        assert (judge.method, judge.requests, len(stub.requests)) == (method, requests, requests)
        swapped = judge_pairs(judge, PROMPTS, COMPLETIONS_B, COMPLETIONS_A, seed=0)
        assert [j["verdict"] for j in swapped] == SWAPPED
    asked = [judgements[i] for i in ASKED]
    assert [j["judge_answer"] is None for j in judgements] == [i not in ASKED for i in range(7)]
    assert {j["a_shown_first"] for j in asked} == {True, False}  # both orders are exercised
    for i in ASKED:  # the order recorded is the order the server saw
        shown = {shown_responses(r["body"]["messages"][-1]["content"])[1:] for r in stub.requests[:requests]}
        order = (COMPLETIONS_A[i], COMPLETIONS_B[i])
        assert (order if judgements[i]["a_shown_first"] else order[::-1]) in shown
    confidences = [j["judge_confidence"] for j in asked]
    expected_confidence = PICKED_PROBABILITY if method == "logprobs" else None
    assert confidences[:4] + confidences[5:] == [expected_confidence] * 5 and confidences[4] is None
    settled = stub.requests[-1]["body"]  # after the first pair, only the settled method's options are sent
    assert ("logprobs" in settled, "response_format" in settled) == (method == "logprobs", method == "structured")


def test_a_fixed_method_sends_only_its_own_options() -> None:
    with OpenAIStub(logprobs=True, structured=True) as stub:
        judge = LLMJudge(stub.url, model="stub-judge", method="letter")
        assert [j["verdict"] for j in judge_pairs(judge, PROMPTS, COMPLETIONS_A, COMPLETIONS_B, seed=0)] == EXPECTED
    assert len(stub.requests) == len(ASKED)
    assert all({"logprobs", "response_format"}.isdisjoint(r["body"]) for r in stub.requests)
    with OpenAIStub() as stub:  # logprobs asked for but ignored: nothing to read, with no fallback
        judge = LLMJudge(stub.url, model="stub-judge", method="logprobs")
        judgements = judge_pairs(judge, PROMPTS, COMPLETIONS_A, COMPLETIONS_B, seed=0)
    assert [judgements[i]["verdict"] for i in ASKED] == ["unparseable"] * len(ASKED)
    assert judgements[0]["judge_answer"].startswith(("A.", "B."))  # the plain answer is kept in the record
    with pytest.raises(ValueError, match="letter"):
        LLMJudge("http://127.0.0.1:1", model="m", method="regex")


def test_the_key_is_sent_only_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OTHER_SECRET)  # the client's own default variable must not leak in
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    with OpenAIStub(api_key=SECRET) as stub:
        judge = LLMJudge(f"{stub.url}/v1/", api_key_env="JUDGE_KEY")  # model discovered: the only one listed
        verdict = judge.judge(PROMPTS[0], COMPLETIONS_A[0], COMPLETIONS_B[0])
    assert (judge.model, verdict.shown, judge.api_key_used) == ("stub-judge", "A", True)
    assert [r["path"] for r in stub.requests][:2] == ["/v1/models", "/v1/chat/completions"]
    assert {r["authorization"] for r in stub.requests} == {f"Bearer {SECRET}"}

    monkeypatch.delenv("JUDGE_KEY")
    with OpenAIStub() as stub:
        judge = LLMJudge(stub.url, api_key_env="JUDGE_KEY")
        judge.judge(PROMPTS[0], COMPLETIONS_A[0], COMPLETIONS_B[0])
    assert not judge.api_key_used and {r["authorization"] for r in stub.requests} == {None}  # no header at all
    with OpenAIStub(api_key=SECRET) as stub, pytest.raises(RuntimeError, match=r"\$JUDGE_KEY") as error:
        LLMJudge(stub.url, api_key_env="JUDGE_KEY")
    assert SECRET not in str(error.value) and OTHER_SECRET not in str(error.value)


def test_model_discovery_needs_exactly_one_model() -> None:
    with OpenAIStub(models=("judge-1", "judge-2")) as stub, pytest.raises(ValueError, match="Pass --llm_model"):
        LLMJudge(stub.url)


def test_unreachable_server_names_the_url_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed
    with pytest.raises(ConnectionError, match=f"{url}/v1.*transformers serve") as error:
        LLMJudge(url, timeout=5, max_retries=1)
    assert SECRET not in str(error.value)
