"""`pgrpo judge`: per-group win rate of two trained runs, by the task reward and by a real LLM over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer, LlamaForCausalLM

from pgrpo.cli import main
from pgrpo.experiments.judge import (
    VERDICTS,
    LLMClient,
    chat_completions_url,
    judge_runs,
    parse_verdict,
    reward_verdict,
)
from pgrpo.testing import build_toy_model_dir
from tests.experiments.test_cli import train_argv

SECRET = "sk-test-never-shown-0123456789"


def build_wordy_toy_model_dir(directory: Path) -> str:
    """A toy Llama (init seed 1) that never emits special tokens and prefers a few words strongly."""
    build_toy_model_dir(directory, seed=1)
    model = LlamaForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
        model.lm_head.weight[tokenizer.all_special_ids] = 0.0  # logit 0, below the best word's
    model.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def two_runs(toy_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two finished 2-step personas runs (GRPO and P-GRPO), without their own evaluation, from two toy Llamas.

    The personas reward of toy text is 0, so 2 steps leave a toy policy as it was; B starts from a "wordy" toy
    so that the two policies answer differently (the plain toy's greedy answers are empty, and its near-uniform
    samples repeat those of any other near-uniform toy under the shared seed)."""
    root = tmp_path_factory.mktemp("judge_runs")
    other_model_dir = build_wordy_toy_model_dir(root / "toy_wordy")
    runs = []
    for estimator, model_dir in (("grpo", toy_model_dir), ("pgrpo", other_model_dir)):
        run_dir = root / estimator
        assert main(train_argv(model_dir, run_dir, "--estimator", estimator, "--eval_prompts", "0")) == 0
        runs.append(run_dir)
    return runs[0], runs[1]


def check_structure(results: dict, judge: str, num_groups: int, num_pairs: int) -> None:
    assert set(results) == {"per_group", "overall", "mean_group_win_rate_a", "metadata", "pairs"}
    assert len(results["per_group"]) == num_groups and len(results["pairs"]) == num_pairs
    for counts in [*results["per_group"].values(), results["overall"]]:
        assert counts["n"] == counts["wins_a"] + counts["wins_b"] + counts["ties"] + counts["unparseable"]
        assert 0.0 <= counts["win_rate_a"] <= 1.0
        expected = (counts["wins_a"] + 0.5 * (counts["ties"] + counts["unparseable"])) / counts["n"]
        assert counts["win_rate_a"] == pytest.approx(expected)
    assert results["overall"]["n"] == num_pairs
    assert sum(c["n"] for c in results["per_group"].values()) == num_pairs
    assert results["metadata"]["judge"] == judge
    assert all(pair["verdict"] in VERDICTS for pair in results["pairs"])


def test_reward_judge_gives_per_group_win_rates(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    run_a, run_b = two_runs
    out = tmp_path / "judge.json"
    results = judge_runs(run_a, run_b, num_prompts=14, out=out)
    check_structure(results, "reward", num_groups=7, num_pairs=14)  # balanced: 2 prompts for each of 7 personas
    meta = results["metadata"]
    assert (meta["task"], meta["decoding"], meta["max_new_tokens"]) == ("personas", "greedy", 4)
    for pair in results["pairs"]:
        assert pair["verdict"] == reward_verdict(pair["reward_a"], pair["reward_b"])
    assert json.loads(out.read_text())["overall"] == results["overall"]


def test_a_policy_against_itself_ties_everywhere(two_runs: tuple[Path, Path]) -> None:
    run_a, _ = two_runs
    results = judge_runs(run_a, run_a, num_prompts=7)
    check_structure(results, "reward", num_groups=7, num_pairs=7)
    assert all(counts["win_rate_a"] == 0.5 for counts in results["per_group"].values())
    assert results["overall"]["ties"] == 7 and results["overall"]["win_rate_a"] == 0.5


def test_sampling_several_completions_per_prompt(two_runs: tuple[Path, Path]) -> None:
    results = judge_runs(*two_runs, num_prompts=3, samples=2, seed=1)
    check_structure(results, "reward", num_groups=3, num_pairs=6)
    assert results["metadata"]["decoding"] == "sampled"


def test_runs_on_different_tasks_are_refused(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    run_a, _ = two_runs
    for key, value in (("task_options", '{"reward_noise": 0.1}'), ("task", "movielens"), ("task_seed", 3)):
        other = tmp_path / key
        (other / "final").mkdir(parents=True)
        config = yaml.safe_load((run_a / "config.yaml").read_text())
        config["run"][key] = value
        (other / "config.yaml").write_text(yaml.safe_dump(config))
        with pytest.raises(ValueError, match=f"different tasks.*{key}"):
            judge_runs(run_a, other)
    with pytest.raises(FileNotFoundError, match=r"config\.yaml"):
        judge_runs(run_a, tmp_path / "nowhere")


def test_cli_prints_a_per_group_table(two_runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.json"
    assert main(["judge", str(two_runs[0]), str(two_runs[1]), "--num_prompts", "7", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "win rate A" in text and "eleanor" in text and "overall" in text and "judge: task reward" in text
    assert json.loads(out.read_text())["overall"]["n"] == 7


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("A", "A"), ("b.", "B"), ("(A)", "A"), ("**Response B**", "B"), ("T", "tie"), ("Tie.", "tie"),
        ("The answer is: **A**", "A"), ("Response B is better for this user.", "B"), ("A: jazz\n\nThe answer is", "A"),
        ("B.\nBecause the user likes rock", "B"), ("I would choose A because", "A"), ("Both are equally good.", "tie"),
        ('It is the letter "B"', "B"),
        ("A good response would mention jazz", "unparseable"), ("The answer is a bit unclear", "unparseable"),
        ("Response A and Response B", "unparseable"), ("", "unparseable"), ("Hmm, hard to say", "unparseable"),
    ],
)  # fmt: skip
def test_parse_verdict(answer: str, verdict: str) -> None:
    assert parse_verdict(answer) == verdict


def test_reward_verdict_and_endpoint_url() -> None:
    assert reward_verdict(0.5, 0.5 + 1e-12) == "tie" and reward_verdict(0.6, 0.5) == "a"
    assert reward_verdict(0.1, 0.5) == "b" and reward_verdict(float("nan"), 0.5) == "unparseable"
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/", "http://h:1/v1/chat/completions"):
        assert chat_completions_url(url) == "http://h:1/v1/chat/completions"
    assert chat_completions_url("https://x/api/openai/chat/completions") == "https://x/api/openai/chat/completions"
    with pytest.raises(ValueError, match="http"):
        chat_completions_url("h:1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_llm_server_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"{url}/v1/chat/completions") as error:
        LLMClient(url, "m", timeout=5).chat([{"role": "user", "content": "hi"}])
    assert SECRET not in str(error.value)


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory):
    """`transformers serve` running SmolLM2-135M-Instruct (local directory, offline) on a free port."""
    # `transformers serve` needs the serving extra (fastapi, uvicorn), installed with `scripts/install.sh dev`
    from pgrpo.models import policy_path

    model_dir = policy_path(None, "smollm2")
    port = free_port()
    executable = Path(sys.executable).with_name("transformers")
    command = [str(executable)] if executable.exists() else [shutil.which("transformers") or "transformers"]
    command += ["serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log_path = tmp_path_factory.mktemp("llm_server") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready after 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", model_dir, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.slow
def test_llm_judge_against_a_real_local_server(
    two_runs: tuple[Path, Path], llm_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    url, model_dir, log_path = llm_server
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # sent as a bearer header (the local server ignores it)
    out = tmp_path / "llm.json"
    argv = ["judge", str(two_runs[0]), str(two_runs[1]), "--judge", "llm", "--llm_url", f"{url}/v1",
            "--num_prompts", "2", "--samples", "2", "--llm_max_tokens", "8", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0  # no --llm_model: the server lists exactly one model
    printed = capsys.readouterr()
    results = json.loads(out.read_text())
    check_structure(results, "llm", num_groups=2, num_pairs=4)
    meta = results["metadata"]
    assert meta["llm_model"] == model_dir and meta["llm_url"] == f"{url}/v1" and meta["api_key_used"]
    assert meta["llm_endpoint"] == f"{url}/v1/chat/completions"
    asked = [pair for pair in results["pairs"] if pair["judge_answer"] is not None]
    assert meta["llm_requests"] == len(asked) >= 1  # sampled toy completions differ, so the server was asked
    for pair in results["pairs"]:  # every verdict is the parsed answer mapped back through the shown order
        if pair["judge_answer"] is None:
            assert pair["completion_a"].strip() == pair["completion_b"].strip() and pair["verdict"] == "tie"
            continue
        shown = parse_verdict(pair["judge_answer"])
        expected = shown if shown in ("tie", "unparseable") else shown.lower()
        if not pair["a_shown_first"] and shown in ("A", "B"):
            expected = {"A": "b", "B": "a"}[shown]
        assert pair["verdict"] == expected
    unparseable = sum(pair["verdict"] == "unparseable" for pair in results["pairs"])
    assert results["overall"]["unparseable"] == unparseable
    assert "LLM" in printed.out and "win rate A" in printed.out
    for text in (out.read_text(), printed.out, printed.err, log_path.read_text()):
        assert SECRET not in text
