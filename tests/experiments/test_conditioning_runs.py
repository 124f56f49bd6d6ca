"""Group conditioning and specialists through `pgrpo train`, and serving a finished run with `pgrpo generate`.

The task's reward is 1 exactly when the prompt the policy read carries the row's own group tag, so it tells, without
looking at the policy, whether training, held-out evaluation and generation condition every prompt on the right group.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from trl import ModelConfig

from pgrpo.cli import main
from pgrpo.experiments.generate import generate_for_group
from pgrpo.experiments.runs import read_metrics
from pgrpo.experiments.train import RunArguments, train
from pgrpo.models import generate_completions, load_policy, load_tokenizer
from pgrpo.tasks import Task, task_from_dataset
from pgrpo.testing import CPU_ARGS, toy_dataset, toy_reward
from pgrpo.trainer import PGRPOConfig

TEMPLATE = "tag {group}"


def tagged_reward(prompts: list, completions: list, group: list[str], **_: object) -> list[float]:
    """1 when the prompt starts with the row's own group tag, else 0."""
    return [float(prompt.startswith(f"tag {label} ")) for prompt, label in zip(prompts, group, strict=True)]


def tag_task(seed: int = 0) -> Task:
    return task_from_dataset(toy_dataset(64), tagged_reward, name="tags", eval_fraction=0.25, seed=seed)


def run(
    model_dir: str, run_dir: Path, labels: str = "task", train_group: str = "", task: Task | None = None, **trainer
) -> dict:
    arguments = RunArguments(task="tags", run_dir=str(run_dir), group_labels=labels, train_group=train_group,
                             eval_prompts=8, eval_samples=2)  # fmt: skip
    settings = {**CPU_ARGS, "save_strategy": "steps", "save_steps": 2, "max_steps": 2, **trainer}
    config = PGRPOConfig(output_dir="runs/_unset", **settings)
    return train(arguments, config, ModelConfig(model_name_or_path=model_dir), task=task or tag_task())


def test_training_and_held_out_prompts_carry_each_rows_group(toy_model_dir: str, tmp_path: Path) -> None:
    summary = run(toy_model_dir, tmp_path / "run", group_conditioning="prompt", group_prompt_template=TEMPLATE)
    assert [m["reward"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1.0, 1.0]
    assert summary["eval"]["reward_sampled"] == 1.0 and summary["eval"]["reward_greedy"] == 1.0
    assert summary["group_conditioning"] == "prompt"
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["trainer"]["group_conditioning"] == "prompt"
    assert config["trainer"]["group_prompt_template"] == TEMPLATE
    unconditioned = run(toy_model_dir, tmp_path / "plain")
    assert unconditioned["eval"]["reward_sampled"] == 0.0  # the reward does tell conditioned prompts apart


def test_random_labels_tag_held_out_prompts_randomly(toy_model_dir: str, tmp_path: Path) -> None:
    conditioning = {"group_conditioning": "prompt", "group_prompt_template": TEMPLATE}
    summary = run(toy_model_dir, tmp_path / "run", "random", **conditioning)
    assert 0.0 < summary["eval"]["reward_sampled"] < 1.0  # some held-out rows carry another group's tag


def test_a_specialist_trains_on_its_group_alone_and_is_judged_on_the_shared_runs_prompts(
    toy_model_dir: str, tmp_path: Path
) -> None:
    specialist = run(toy_model_dir, tmp_path / "small", train_group="small")
    shared = run(toy_model_dir, tmp_path / "shared")
    assert set(specialist["group_history"]) == {"small"}  # every trained prompt is the group's
    assert set(shared["eval"]["per_group_prompts"]) == {"small", "big"}
    assert specialist["eval"]["per_group_prompts"] == {"small": shared["eval"]["per_group_prompts"]["small"]}
    with pytest.raises(ValueError, match=r"--train_group 'tiny' has no train prompts in task 'tags'; its groups are"):
        run(toy_model_dir, tmp_path / "tiny", train_group="tiny")


def test_generate_answers_with_the_runs_conditioning(
    toy_model_dir: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    run(toy_model_dir, run_dir, group_conditioning="prompt", group_prompt_template=TEMPLATE)
    prompts = ["say something", "say up", "something for group"]
    read: list = []

    def recording(model, tokenizer, inputs, **kwargs):  # the real generation, recording what the policy reads
        read.extend(inputs)
        return generate_completions(model, tokenizer, inputs, **kwargs)

    monkeypatch.setattr("pgrpo.models.serving.generate_completions", recording)
    answers = generate_for_group(run_dir, "small", prompts, max_new_tokens=8, seed=3)
    assert read == [f"tag small {prompt}" for prompt in prompts]
    model, tokenizer = load_policy(None, str(run_dir / "final"))
    torch.manual_seed(3)
    assert answers == generate_completions(model, tokenizer, read, max_new_tokens=8, do_sample=True)
    assert main(["generate", "--run_dir", str(run_dir), "--group", "small", "--prompt", "say up", "--greedy"]) == 0
    assert "[small] say up\n  -> " in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="is not a pgrpo run directory"):
        generate_for_group(tmp_path, "small", prompts)


def test_generate_without_prompts_answers_the_groups_held_out_prompts(
    tmp_path: Path, toy_model_dir: str, capsys, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    argv = ["train", "--task", "personas", "--model_name_or_path", toy_model_dir, "--run_dir", str(run_dir),
            "--max_steps", "1", "--per_device_train_batch_size", "8", "--max_completion_length", "4",
            "--eval_prompts", "0", "--disable_tqdm", "true"]  # fmt: skip
    assert main(argv) == 0
    assert main(["generate", "--run_dir", str(run_dir), "--group", "kemar", "--num_prompts", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[kemar] Kemar, a beach bartender, asks:") == 2
    assert (
        "trained without group conditioning (group_conditioning=none): its policy answers every group alike, so "
        "the group changes nothing but which held-out prompts are asked" in caplog.text
    )  # was: not a word


def test_descriptions_of_groups_the_task_lacks_are_refused_listing_its_groups(toy_model_dir: str, tmp_path: Path):
    with pytest.raises(ValueError, match=r"group_descriptions name \['smal'\], which are not groups of task 'tags' "
                                         r"\(--group_column group\); its groups are \['big', 'small'\]"):  # fmt: skip
        run(toy_model_dir, tmp_path / "run", group_conditioning="prompt", group_descriptions={"smal": "a typo"})
    assert not (tmp_path / "run").exists()  # before the run directory and the policy


def test_adapter_runs_evaluate_and_serve_each_row_through_its_groups_adapter(toy_model_dir: str, tmp_path: Path):
    from pgrpo.experiments.evaluation import sequence_logprobs
    from pgrpo.models.serving import load_group_policy, load_routed_policy

    run_dir = tmp_path / "run"
    task = task_from_dataset(toy_dataset(64), toy_reward, name="toy", eval_fraction=0.25)  # a reward that varies
    summary = run(toy_model_dir, run_dir, task=task, group_conditioning="adapter", learning_rate=0.05, max_steps=4)
    assert summary["eval"]["num_prompts"] == 8 and (run_dir / "final" / "group_adapters" / "index.json").is_file()
    final = run_dir / "final"
    tokenizer, routed_model = load_tokenizer(final), load_routed_policy(final)
    groups = ["small", "big", "big", "small"]
    prompts = [f"say something for group {group}" for group in groups]
    completions = ["up up", "down up", "up", "down down down"]
    routed_logp, _ = sequence_logprobs(routed_model, tokenizer, prompts, completions, batch_size=3, groups=groups)
    for i, group in enumerate(groups):  # reference: the group's adapter merged into the shared weights, alone
        alone, _ = sequence_logprobs(load_group_policy(final, group), tokenizer, [prompts[i]], [completions[i]])
        assert torch.allclose(routed_logp[i], alone[0], atol=1e-4)
    shared_logp, _ = sequence_logprobs(routed_model, tokenizer, prompts, completions)
    assert not torch.allclose(shared_logp, routed_logp, atol=1e-4)  # the adapters did learn something
    answers = generate_for_group(run_dir, "small", ["say up"], max_new_tokens=4, do_sample=False)
    model = load_group_policy(final, "small")
    assert answers == generate_completions(model, tokenizer, ["say up"], max_new_tokens=4)
