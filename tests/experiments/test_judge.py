"""`pgrpo judge` on two real tiny personas policies whose task rewards differ on purpose.

Run A ("strong") is the tiny personas policy warm-started with 100 SFT steps, run B ("weak") with 80:
greedy, A fits most personas better, B fits one persona better, and a few prompts are exact ties. The
expected win counts come from each policy's own completions scored by the task reward, computed here
without the judge's code. The LLM path is checked end to end against an ``OpenAIStub`` that prefers
the higher personas reward (a stand-in for a remote API) and against a real
local server (`transformers serve` + SmolLM2-135M-Instruct).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from pgrpo.cli import main
from pgrpo.experiments.evaluation import balanced_rows
from pgrpo.experiments.judge import judge_runs
from pgrpo.experiments.runs import resolve
from pgrpo.experiments.train import RunArguments
from pgrpo.models import generate_completions, tiny_policy_path
from pgrpo.tasks import Task, build_task
from pgrpo.tasks.personas import score
from pgrpo.testing import CPU_ARGS
from pgrpo.trainer import PGRPOConfig
from tests.experiments.openai_stub import OpenAIStub

SECRET = "sk-test-never-shown-0123456789"
MAX_COMPLETION_LENGTH = 24
NUM_PROMPTS = 14  # two held-out prompts for each of the seven personas


def write_run_dir(run_dir: Path, policy_dir: Path, **trainer) -> Path:
    """A finished run directory as `pgrpo train` leaves it, as far as the judge reads it: config.yaml + final/."""
    shutil.copytree(policy_dir, run_dir / "final")
    options = {**CPU_ARGS, "max_completion_length": MAX_COMPLETION_LENGTH, **trainer}
    config = PGRPOConfig(output_dir=str(run_dir / "checkpoints"), **options)
    resolved = resolve({"run": RunArguments(task="personas", run_dir=str(run_dir)), "trainer": config})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=True))
    return run_dir


@pytest.fixture(scope="module")
def task() -> Task:
    return build_task("personas", seed=0)


@pytest.fixture(scope="module")
def runs(task: Task, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("judge_runs")
    return {
        name: write_run_dir(root / name, tiny_policy_path(task, sft_steps=steps))
        for name, steps in (("strong", 100), ("weak", 80))
    }


def greedy_rewards(run_dir: Path, task: Task, rows: list[dict], prefix: str = "") -> list[float]:
    """The task reward of the run's greedy completions, each generated and scored here (not by the judge), the
    prompts given ``prefix.format(group)`` in front."""
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    prompts = [prefix.format(row["group"]) + row["prompt"] for row in rows]
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=MAX_COMPLETION_LENGTH)
    return [score(text, row["group"])["reward"] for text, row in zip(completions, rows, strict=True)]


@pytest.fixture(scope="module")
def expected(runs: dict[str, Path], task: Task) -> dict[str, tuple[int, int, int]]:
    """Per persona: (strong wins, weak wins, ties) over the balanced held-out prompts, by the task reward."""
    rows = balanced_rows(task.eval_dataset.to_list(), "group", NUM_PROMPTS)
    strong, weak = greedy_rewards(runs["strong"], task, rows), greedy_rewards(runs["weak"], task, rows)
    counts: dict[str, Counter] = {row["group"]: Counter() for row in rows}
    for row, reward_strong, reward_weak in zip(rows, strong, weak, strict=True):
        outcome = "strong" if reward_strong > reward_weak else "weak" if reward_weak > reward_strong else "tie"
        counts[row["group"]][outcome] += 1
    expected = {group: (c["strong"], c["weak"], c["tie"]) for group, c in counts.items()}
    totals = [sum(values) for values in zip(*expected.values(), strict=True)]
    assert totals[0] > totals[1] > 0 and totals[2] > 0, f"the fixture should have wins both ways and ties: {expected}"
    return expected


def counts_of(results: dict) -> dict[str, tuple[int, int, int, int]]:
    return {g: (c["wins_a"], c["wins_b"], c["ties"], c["unparseable"]) for g, c in results["per_group"].items()}


def test_reward_judge_counts_what_the_task_reward_says(runs: dict, expected: dict, tmp_path: Path) -> None:
    out = tmp_path / "judge.json"
    results = judge_runs(runs["strong"], runs["weak"], num_prompts=NUM_PROMPTS, out=out)
    assert counts_of(results) == {group: (s, w, t, 0) for group, (s, w, t) in expected.items()}
    meta = results["metadata"]
    assert (meta["task"], meta["decoding"], meta["max_new_tokens"]) == ("personas", "greedy", MAX_COMPLETION_LENGTH)
    assert json.loads(out.read_text())["per_group"] == results["per_group"]


def test_a_conditioned_run_answers_each_user_with_its_groups_text(runs: dict, task: Task, tmp_path: Path) -> None:
    conditioned = write_run_dir(tmp_path / "conditioned", runs["strong"] / "final", group_conditioning="prompt",
                                group_prompt_template="{group} says:")  # fmt: skip
    rows = balanced_rows(task.eval_dataset.to_list(), "group", NUM_PROMPTS)
    with_text = greedy_rewards(conditioned, task, rows, "{} says: ")
    plain = greedy_rewards(runs["strong"], task, rows)
    assert with_text != plain  # the text changes the answers, so the counts below can tell
    results = judge_runs(conditioned, runs["strong"], num_prompts=NUM_PROMPTS)
    wins = sum(a > b for a, b in zip(with_text, plain, strict=True))
    losses = sum(b > a for a, b in zip(with_text, plain, strict=True))
    assert sum(c["wins_a"] for c in results["per_group"].values()) == wins
    assert sum(c["wins_b"] for c in results["per_group"].values()) == losses


def test_swapping_the_runs_swaps_the_counts(runs: dict, expected: dict) -> None:
    results = judge_runs(runs["weak"], runs["strong"], num_prompts=NUM_PROMPTS)
    assert counts_of(results) == {group: (w, s, t, 0) for group, (s, w, t) in expected.items()}


def test_a_policy_against_itself_ties_everywhere(runs: dict) -> None:
    results = judge_runs(runs["strong"], runs["strong"], num_prompts=7)
    one_tie = {"n": 1, "wins_a": 0, "wins_b": 0, "ties": 1, "unparseable": 0, "win_rate_a": 0.5}
    personas = ["eleanor", "hank", "iris", "jamal", "kemar", "ravi", "sofia"]
    assert results["per_group"] == dict.fromkeys(personas, one_tie)
    assert results["overall"] == {**one_tie, "n": 7, "ties": 7} and results["mean_group_win_rate_a"] == 0.5


def test_sampling_several_completions_per_prompt(runs: dict) -> None:
    results = judge_runs(runs["strong"], runs["weak"], num_prompts=3, samples=2, seed=1)
    assert [c["n"] for c in results["per_group"].values()] == [2, 2, 2] and results["overall"]["n"] == 6
    prompts = [pair["prompt"] for pair in results["pairs"]]
    assert prompts[0::2] == prompts[1::2] and len(set(prompts)) == 3  # each prompt answered twice
    assert results["metadata"]["decoding"] == "sampled"


def test_runs_on_different_tasks_are_refused(runs: dict, tmp_path: Path) -> None:
    for key, value in (("task_options", '{"reward_noise": 0.1}'), ("task", "movielens"), ("task_seed", 3)):
        other = tmp_path / key
        (other / "final").mkdir(parents=True)
        config = yaml.safe_load((runs["strong"] / "config.yaml").read_text())
        config["run"][key] = value
        (other / "config.yaml").write_text(yaml.safe_dump(config))
        with pytest.raises(ValueError, match=f"different tasks.*{key}"):
            judge_runs(runs["strong"], other)
    with pytest.raises(FileNotFoundError, match=r"config\.yaml"):
        judge_runs(runs["strong"], tmp_path / "nowhere")


def test_cli_prints_a_per_group_table(runs: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.json"
    assert main(["judge", str(runs["strong"]), str(runs["weak"]), "--num_prompts", "7", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "win rate A" in text and "eleanor" in text and "overall" in text and "judge: task reward" in text
    assert json.loads(out.read_text())["overall"]["n"] == 7


def prefers_higher_reward(request: str, first: str, second: str) -> str:
    """An oracle judge: the response with the higher personas reward for the persona who asks (T when equal)."""
    persona = request.split(",", 1)[0].lower()  # "Eleanor, a retired judge, asks: ..."
    first_reward, second_reward = score(first, persona)["reward"], score(second, persona)["reward"]
    return "A" if first_reward > second_reward else "B" if second_reward > first_reward else "T"


def test_llm_judge_end_to_end_against_an_api_stand_in(
    runs: dict, expected: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Through the CLI: every verdict the (stub) LLM gives in shown positions lands on the right run."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = tmp_path / "llm.json"
    with OpenAIStub(prefer=prefers_higher_reward, logprobs=True, api_key=SECRET) as stub:
        argv = ["judge", str(runs["strong"]), str(runs["weak"]), "--judge", "llm", "--llm_url", stub.url,
                "--num_prompts", str(NUM_PROMPTS), "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
    printed = capsys.readouterr()
    results = json.loads(out.read_text())
    assert counts_of(results) == {group: (s, w, t, 0) for group, (s, w, t) in expected.items()}
    meta = results["metadata"]
    assert (meta["llm_model"], meta["llm_verdict_method"]) == ("stub-judge", "logprobs")
    assert meta["agreement_with_reward"] == 1.0
    asked = [pair for pair in results["pairs"] if pair["judge_answer"] is not None]
    assert meta["llm_requests"] == len(asked) == len(stub.requests) - 1  # + the model listing
    assert {pair["a_shown_first"] for pair in asked} == {True, False}
    assert "verdicts read from: logprobs" in printed.out
    for text in (out.read_text(), printed.out, printed.err):
        assert SECRET not in text


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory):
    """`transformers serve` running SmolLM2-135M-Instruct (local directory, offline) on a free port."""
    # `transformers serve` needs the serving extra (fastapi, uvicorn), installed with `scripts/install.sh dev`
    from pgrpo.models import policy_path

    model_dir = policy_path(None, "smollm2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
    runs: dict, llm_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """transformers serve ignores logprobs and response_format, so the judge settles on reading letters."""
    url, model_dir, log_path = llm_server
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # sent as a bearer header (the local server ignores it)
    out = tmp_path / "llm.json"
    argv = ["judge", str(runs["strong"]), str(runs["weak"]), "--judge", "llm", "--llm_url", f"{url}/v1",
            "--num_prompts", "2", "--samples", "2", "--llm_max_tokens", "8", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0  # no --llm_model: the server lists exactly one model
    printed = capsys.readouterr()
    results = json.loads(out.read_text())
    meta = results["metadata"]
    assert meta["llm_model"] == model_dir and meta["llm_base_url"] == f"{url}/v1" and meta["api_key_used"]
    asked = [pair for pair in results["pairs"] if pair["judge_answer"] is not None]
    assert len(asked) == 4  # the two policies' sampled answers differ on every pair
    assert meta["llm_verdict_method"] == "letter" and meta["llm_requests"] == len(asked) + 1  # one probe
    to_run = {("A", True): "a", ("A", False): "b", ("B", True): "b", ("B", False): "a", ("T", True): "tie",
              ("T", False): "tie"}  # fmt: skip
    for pair in asked:  # a bare letter answer lands on the run that was shown in that position
        letter = pair["judge_answer"].strip().rstrip(".")
        if letter in ("A", "B", "T"):
            assert pair["verdict"] == to_run[letter, pair["a_shown_first"]]
    assert results["overall"]["n"] == 4 and "LLM" in printed.out and "win rate A" in printed.out
    for text in (out.read_text(), printed.out, printed.err, log_path.read_text()):
        assert SECRET not in text
