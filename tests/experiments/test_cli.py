"""The `pgrpo` command: run directories, YAML + flags, resume, overwrite protection, bench and report."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM
from trl import ModelConfig

from pgrpo.cli import console, main
from pgrpo.experiments.runs import read_metrics
from pgrpo.experiments.train import RunArguments
from pgrpo.tasks import build_task
from pgrpo.trainer import PGRPOConfig


def train_argv(model_dir: str, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train", "--task", "personas", "--model_name_or_path", model_dir, "--run_dir", str(run_dir), "--max_steps", "2",
        "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "4",
        "--eval_prompts", "7", "--eval_samples", "1", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


def test_train_writes_a_complete_run_directory(toy_model_dir: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert main(train_argv(toy_model_dir, run_dir, "--estimator", "pgrpo_scale")) == 0
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["trainer"]["estimator"] == "pgrpo_scale" and config["run"]["task"] == "personas"
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert {"reward", "entropy", "wall_time", "group/worst_reward_running"} <= set(metrics[0])
    assert any(k.startswith("group/") and k.endswith("/history_count") for k in metrics[-1])
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["num_prompts"] == 7 and len(evaluation["per_group_sampled"]) == 7
    assert evaluation["per_group_prompts"] == {name: 1 for name in evaluation["per_group_sampled"]}
    assert math.isfinite(evaluation["kl_to_initial"]) and evaluation["perplexity"] > 1
    task = build_task("personas", seed=0)
    assert evaluation["train_shares"] == pytest.approx({str(g.name): g.share for g in task.groups})
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and not summary["resumed"]
    assert (run_dir / "final" / "config.json").exists() and (run_dir / "checkpoints").is_dir()


def test_train_logs_each_step_in_one_line_and_ends_with_the_held_out_table(
    toy_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(train_argv(toy_model_dir, run_dir, "--beta", "0.01")) == 0  # --disable_tqdm: transformers' printer
    out = capsys.readouterr().out
    assert "{'loss'" not in out and "'completions/mean_length'" not in out  # TRL's dict of every metric
    assert "train_runtime" not in out  # transformers' end-of-training dict: the report's first line says it
    for m in read_metrics(run_dir / "metrics.jsonl"):
        line = f"step {m['step']}/2  reward {m['reward']:.3f}  worst group {m['group/worst_reward_running']:.3f}  "
        assert f"{line}loss {m['loss']:.4f}  kl {m['kl']:.4f}\n" in out
    evaluation = json.loads((run_dir / "eval.json").read_text())
    table = out[out.index("Held-out reward (7 prompts, 1 sampled completions each):\n") :].splitlines()
    assert table[1].split() == ["group", "prompts", "sampled", "greedy"]
    for group, reward in evaluation["per_group_sampled"].items():
        (line,) = [line for line in table if line.startswith(f"{group} ")]
        assert line.split()[1:4] == ["1", f"{reward:.3f}", f"{evaluation['per_group_greedy'][group]:.3f}"]
        assert line.endswith("<- worst") == (reward == evaluation["worst_group_sampled"])
    total = f"{evaluation['reward_sampled']:.3f}  {evaluation['reward_greedy']:.3f}"
    assert any(line.split()[:3] == ["all", "groups", "7"] and line.split()[3:] == total.split() for line in table)
    assert f", {evaluation['worst_group_sampled']:.3f} (sampled)\n" in out
    assert f"KL to the initial policy: {evaluation['kl_to_initial']:.4f} per token\n" in out
    assert f"run directory: {run_dir} (" in out and "eval: {" not in out


def test_a_frozen_run_is_its_own_initial_policy(
    toy_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Learning rate 0 (a bench's frozen reference): no update, so no copy of the initial policy is loaded for the
    evaluation and the KL to it is 0, not estimated; a trained run loads and estimates it."""
    loaded: list[str] = []

    class Recording:
        @staticmethod
        def from_pretrained(path, *args, **kwargs):
            loaded.append(str(path))
            return AutoModelForCausalLM.from_pretrained(path, *args, **kwargs)

    monkeypatch.setattr("pgrpo.experiments.train.AutoModelForCausalLM", Recording)  # the evaluation's reference
    assert main(train_argv(toy_model_dir, tmp_path / "frozen", "--learning_rate", "0")) == 0
    assert loaded == []
    assert main(train_argv(toy_model_dir, tmp_path / "trained", "--learning_rate", "0.05")) == 0
    assert loaded == [toy_model_dir]
    frozen, trained = (json.loads((tmp_path / name / "eval.json").read_text()) for name in ("frozen", "trained"))
    assert frozen["kl_to_initial"] == 0.0 and frozen["perplexity_initial"] == frozen["perplexity"]
    assert math.isfinite(trained["kl_to_initial"]) and trained["perplexity_initial"] == frozen["perplexity"]


def test_zero_steps_evaluate_the_initial_policy_as_an_unchanged_one_step_run_does(
    toy_model_dir: str, tmp_path: Path
) -> None:
    """--max_steps 0 trains nothing (an untrained reference, as the benches' frozen variants run): the held-out
    evaluation, seeded by the run's seed, equals that of a run whose one step left the policy unchanged."""
    untrained = tmp_path / "untrained"
    assert main(train_argv(toy_model_dir, untrained, "--learning_rate", "0", "--max_steps", "0")) == 0
    assert main(train_argv(toy_model_dir, tmp_path / "one_step", "--learning_rate", "0", "--max_steps", "1")) == 0
    summary = json.loads((untrained / "summary.json").read_text())
    assert summary["steps"] == 0 and summary["seconds_per_step"] is None
    assert read_metrics(untrained / "metrics.jsonl") == []
    assert not (untrained / "checkpoints").exists() or not list((untrained / "checkpoints").glob("checkpoint-*"))
    zero, one = (json.loads((tmp_path / name / "eval.json").read_text()) for name in ("untrained", "one_step"))
    assert zero == one and zero["kl_to_initial"] == 0.0


def test_finished_run_is_never_overwritten_without_the_flag(toy_model_dir: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    main(train_argv(toy_model_dir, run_dir))
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(train_argv(toy_model_dir, run_dir))
    assert (run_dir / "metrics.jsonl").read_text() == before
    assert main(train_argv(toy_model_dir, run_dir, "--overwrite", "true")) == 0
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 2


def test_interrupted_run_resumes_and_appends_its_metrics(toy_model_dir: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = train_argv(toy_model_dir, run_dir, "--max_steps", "4", "--save_steps", "2")
    main(argv)
    lines_before = len((run_dir / "metrics.jsonl").read_text().splitlines())
    (run_dir / "summary.json").unlink()  # as if killed after checkpoint-2
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-4")
    main(argv)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed"] and summary["steps"] == 4
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) > lines_before  # appended, not truncated
    assert [m["step"] for m in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]


def test_unfinished_run_with_another_config_is_refused(toy_model_dir: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    main(train_argv(toy_model_dir, run_dir))
    (run_dir / "summary.json").unlink()
    with pytest.raises(ValueError, match=r"differs in \['trainer.estimator'\]"):  # only the refused setting is named
        main(train_argv(toy_model_dir, run_dir, "--estimator", "grpo", "--max_steps", "3"))


def test_an_interrupted_run_may_train_longer_and_log_differently_and_says_where_it_resumed(
    toy_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    main(train_argv(toy_model_dir, run_dir, "--max_steps", "4", "--save_steps", "2"))
    (run_dir / "summary.json").unlink()  # as if killed after checkpoint-2
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-4")
    capsys.readouterr()
    longer = ["--max_steps", "5", "--save_steps", "5", "--logging_steps", "2", "--eval_prompts", "4"]
    assert main(train_argv(toy_model_dir, run_dir, *longer)) == 0  # was refused as "another config"
    out = capsys.readouterr().out
    assert f"pgrpo train: resuming {run_dir} from checkpoint-2 (changed: run.eval_prompts: 7 -> 4; " in out
    assert "trainer.logging_steps: 1 -> 2; trainer.max_steps: 4 -> 5; trainer.save_steps: 2 -> 5)" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["resumed_from"] == "checkpoint-2" and summary["eval"]["num_prompts"] == 4
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["max_steps"] == 5  # what it ran with
    assert [m["step"] for m in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 4]  # then every 2nd step logged


def test_yaml_config_then_flags_override(toy_model_dir: str, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"estimator": "dr_grpo", "history": "ema", "learning_rate": 0.01}))
    run_dir = tmp_path / "run"
    main(train_argv(toy_model_dir, run_dir, "--config", str(config), "--learning_rate", "0.002"))
    trainer = yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]
    assert (trainer["estimator"], trainer["history"], trainer["learning_rate"]) == ("dr_grpo", "ema", 0.002)


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--estimator", "--group_column", "--history_decay", "--task_options", "--learning_rate"):
        assert option in text
    assert text.startswith("usage: pgrpo train [--config FILE.yaml] [--OPTION VALUE ...]\n")  # not 220 lines
    sections = [line for line in text.splitlines() if line and not line.startswith(" ")][1:]
    assert sections == ["options:", "RunArguments (pgrpo):", "PGRPOConfig (pgrpo):", "ModelConfig (trl):",
                        "GRPOConfig (trl):", "TrainingArguments (transformers):"]  # fmt: skip
    first = {option: text.index(f"\n  --{option} ") for option in ("task", "estimator", "group_conditioning")}
    assert max(first.values()) < text.index("\n  --model_name_or_path ") < text.index("\n  --learning_rate ")
    every = {f.name for d in (RunArguments, PGRPOConfig, ModelConfig) for f in dataclasses.fields(d) if f.init}
    printed = set(re.findall(r"^  --(\w+)", text, re.MULTILINE)) - {"help"}
    assert every == {o for o in printed if o.removeprefix("no_") == o or o[3:] not in every}  # --no_<flag> aside
    assert main(["--help"]) == 0


@pytest.mark.slow
def test_bench_runs_in_parallel_resumes_and_reports(toy_model_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "--out", str(out), "--tasks", "personas", "--variants", "grpo", "pgrpo", "--seeds", "2",
            "--regimes", "personas:anonymous", "--regime_variants", "grpo", "pgrpo", "pgrpo_random",
            "--specialist_seeds", "1", "--max_steps", "2", "--prompts_per_step", "2", "--eval_prompts", "14",
            "--jobs", "2", "--train_options", json.dumps({"model_name_or_path": toy_model_dir,
                                                          "max_completion_length": 4, "eval_samples": 1})]  # fmt: skip
    assert main(argv) == 0
    summaries = sorted(out.glob("runs/*/*/*/seed*/summary.json"))
    assert len(summaries) == 2 * 2 + 3 * 2 + 7 * 2  # matrix: grpo, pgrpo; the regime: 3 variants; 7 + 7 specialists
    regime_run = out / "runs/regimes/personas-anonymous/pgrpo_random/seed1"
    assert json.loads((regime_run / "summary.json").read_text())["group_labels"] == "random"
    run_config = yaml.safe_load((regime_run / "config.yaml").read_text())
    assert json.loads(run_config["run"]["task_options"]) == {"anonymous": True}
    assert run_config["trainer"]["seed"] == 1 and run_config["run"]["eval_prompts"] == 14
    evaluation = json.loads((regime_run / "eval.json").read_text())
    assert evaluation["per_group_prompts"] == {name: 2 for name in evaluation["per_group_sampled"]}
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"personas", "personas:anonymous", "bar"}
    specialists = {f"specialist_{persona}" for persona in results["personas"]["pgrpo"]["per_group_eval"]}
    assert set(results["personas:anonymous"]) == {"grpo", "pgrpo", "pgrpo_random", *specialists}
    assert "eval worst group (sampled) - random labels" in results["personas:anonymous"]["pgrpo"]
    assert set(results["bar"]) == {"pgrpo"}  # no control, no specialist
    gaps = results["personas"]["pgrpo"]["personalization gap"]
    assert set(gaps) == set(results["personas"]["pgrpo"]["per_group_eval"]) and len(gaps) == 7
    kemar = json.loads((out / "runs/matrix/personas/specialist_kemar/seed0/eval.json").read_text())["per_group_sampled"]
    shared = json.loads((out / "runs/matrix/personas/pgrpo/seed0/eval.json").read_text())["per_group_sampled"]
    assert gaps["kemar"][0] == pytest.approx(kemar["kemar"] - shared["kemar"])  # one seed: the difference itself
    assert len(results["personas"]["pgrpo"]["per_group_eval"]) == 7
    shares = {str(info.name): info.share for info in build_task("personas").groups}  # the train-mix weights
    expected = []
    for seed_dir in sorted((out / "runs/matrix/personas/grpo").glob("seed*")):
        if seed_dir.is_dir():
            per_group = json.loads((seed_dir / "eval.json").read_text())["per_group_sampled"]
            expected.append(sum(shares[g] * r for g, r in per_group.items()) / sum(shares[g] for g in per_group))
    assert len(expected) == 2
    assert results["personas"]["grpo"]["eval reward (train mix)"][0] == pytest.approx(sum(expected) / 2)
    assert "| headline" not in (out / "report.md").read_text() and (out / "headline.png").stat().st_size > 10_000
    for figure in ("curves_personas.png", "curves_personas-anonymous.png", "groups_personas.png",
                   "worst_vs_overall.png", "regimes.png"):  # fmt: skip
        assert (out / figure).stat().st_size > 10_000, figure
    assert "| pgrpo |" in (out / "report.md").read_text()
    mtimes = [p.stat().st_mtime for p in summaries]
    assert main(argv) == 0  # everything finished: nothing re-runs
    assert [p.stat().st_mtime for p in summaries] == mtimes


def test_models_with_a_chat_template_get_the_prompt_as_a_user_message(toy_model_dir: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model_dir = tmp_path / "chat_model"
    shutil.copytree(toy_model_dir, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = "{% for m in messages %}say {{ m['content'] }} for{% endfor %}"
    tokenizer.save_pretrained(model_dir)
    run_dir = tmp_path / "run"
    assert main(train_argv(str(model_dir), run_dir)) == 0
    examples = json.loads((run_dir / "eval.json").read_text())["examples"]
    assert all(e["prompt"].startswith("say ") and e["prompt"].endswith(" for") for e in examples)
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 2  # TRL trained on conversational prompts


@pytest.mark.slow
def test_demo_trains_every_variant_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max_steps", "3", "--seeds", "1"]) == 0
    printed = capsys.readouterr().out
    assert all(f"\n{variant} " in printed for variant in ("grpo", "pgrpo", "pgrpo_balanced_sampling"))
    assert "worst" in printed and "10 seeds" in printed
    results = json.loads((out / "results.json").read_text())["personas"]
    assert set(results) == {"grpo", "pgrpo", "pgrpo_balanced_sampling"}
    assert len(results["pgrpo"]["per_group_eval"]) == 7
    assert (out / "curves_personas.png").stat().st_size > 10_000 and (out / "report.md").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_train_command_runs_under_torchrun(toy_model_dir: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pgrpo",
               *train_argv(toy_model_dir, run_dir), "--ddp_backend", "gloo"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and (run_dir / "final" / "model.safetensors").exists()
    assert [m["step"] for m in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]  # one writer: the main process


@pytest.mark.slow
def test_train_output_has_no_deprecation_warning(toy_model_dir: str, tmp_path: Path) -> None:
    """Every FutureWarning and DeprecationWarning is an error in a short `pgrpo train` (TRL's own calls to renamed
    transformers methods are silenced by pgrpo.trainer, see there); the run must still finish."""
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    command = [sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning", "-m", "pgrpo",
               *train_argv(toy_model_dir, run_dir)]  # fmt: skip
    result = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Warning:" not in output and (run_dir / "summary.json").exists()


UNLABELLED_TASK = '''
from datasets import Dataset

from pgrpo.tasks import Task
from pgrpo.testing import toy_reward


def build(seed: int = 0):
    """Built as a Task directly (task_from_dataset would refuse it): 3 of 40 train labels missing, one empty."""
    groups = ["big", None, "small", ""] + ["big"] * 33 + [None, None, "small"]
    train = Dataset.from_dict({"prompt": ["say something"] * 40, "group": groups})
    held_out = Dataset.from_dict({"prompt": ["say something"] * 4, "group": ["big", "small"] * 2})
    return Task("unlabelled", "Missing labels.", train, held_out, toy_reward)
'''


def test_a_users_mistake_is_one_line_before_anything_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "unlabelled.py").write_text(UNLABELLED_TASK)
    run_dir = tmp_path / "run"
    argv = ["train", "--task", f"{tmp_path / 'unlabelled.py'}:build", "--run_dir", str(run_dir)]  # the tiny policy
    monkeypatch.delenv("PGRPO_TRACEBACK", raising=False)
    assert console(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert error.startswith(
        "pgrpo train: error: task 'unlabelled' train data column 'group': Preference-group labels must be non-empty "
        "str or int: 3 of 40 missing (None or NaN) at rows 1, 37, 38; 1 of 40 empty strings at row 3."
    )
    assert not run_dir.exists()  # checked before the run directory, so before the tiny policy (built after it)
    monkeypatch.setenv("PGRPO_TRACEBACK", "1")  # for debugging: the exception itself
    with pytest.raises(ValueError, match="3 of 40 missing"):
        console(argv)
