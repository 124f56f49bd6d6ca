"""Serving a saved run: the policy and the conditioning that answer a group equal what training used for that group.

The references are the trainer's own: the prompts TRL scored in training (prompt conditioning) and the trainer's
in-memory model routed through each group's adapter (adapter conditioning). Serving reads neither: it loads the
run directory's config.yaml and final/ from disk.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from transformers import AutoTokenizer

from pgrpo.experiments.evaluation import sequence_logprobs
from pgrpo.experiments.runs import resolve
from pgrpo.models import generate_completions
from pgrpo.models.serving import serve
from pgrpo.tasks.base import completion_text
from pgrpo.testing import CPU_ARGS, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} {{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}say {% endif %}"
)
PROMPTS = {"big": "say up", "small": "say down left"}


def save_run(trainer: PGRPOTrainer, run_dir: Path) -> Path:
    """A finished run directory as `pgrpo train` leaves it, as far as serving reads it: config.yaml + final/."""
    trainer.save_model(str(run_dir / "final"))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolve({"trainer": trainer.args}), sort_keys=True))
    return run_dir


def test_importing_serving_imports_no_trl() -> None:
    code = "import sys, pgrpo.models.serving; print(sorted(m for m in sys.modules if m.split('.')[0] == 'trl'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_prompt_run_is_served_the_prompts_training_gave_each_group(toy_model_dir: str, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    seen: list = []

    def reward(prompts, completions, group, **kwargs):  # records the prompts TRL scored: what the policy read
        seen.extend(zip(prompts, group, strict=True))
        return toy_reward([completion_text(c) for c in completions], group)

    groups = ["small", "big"]  # a batch draws 2 prompts: both groups
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": "something"}]] * 2, "group": groups})
    args = PGRPOConfig(output_dir=str(tmp_path / "checkpoints"), max_steps=1, group_conditioning="prompt",
                       group_prompt_template="for {description}", group_prompt_role="user",
                       group_descriptions={"small": "small group"}, **CPU_ARGS)  # fmt: skip
    trainer = PGRPOTrainer(toy_model_dir, reward, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    run_dir = save_run(trainer, tmp_path / "run")
    trained = dict((group, prompt) for prompt, group in seen)
    assert trained["small"] == [{"role": "user", "content": "for small group something"}]  # role user, described
    for group in ("small", "big"):
        served = serve(run_dir, group)
        assert served.chat and served.conditioning.kind == "prompt"
        assert served.prompts(["something"], [group]) == [trained[group]]
        expected = generate_completions(trainer.model, tokenizer, [trained[group]], 4, chat=True)
        assert served.answer(["something"], max_new_tokens=4, do_sample=False) == expected
    with pytest.raises(ValueError, match="serves group 'big' only"):
        served.answer(["something"], ["small"])


@pytest.fixture(scope="module")
def adapter_run(toy_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[PGRPOTrainer, Path]:
    """A prompt+adapter run whose group adapters differ on purpose (random B), saved as a run directory."""
    tmp_path = tmp_path_factory.mktemp("adapter_run")
    labels = ["big", "small"] * 4
    dataset = Dataset.from_dict({"prompt": [PROMPTS[label] for label in labels], "group": labels})
    args = PGRPOConfig(output_dir=str(tmp_path / "checkpoints"), group_conditioning="prompt+adapter",
                       group_prompt_template="group {group}", **CPU_ARGS)  # fmt: skip
    trainer = PGRPOTrainer(toy_model_dir, toy_reward, args=args, train_dataset=dataset)
    torch.manual_seed(1)
    with torch.no_grad():
        for index in range(len(trainer.group_adapters.names)):
            for parameter in trainer.group_adapters.parameters(index).values():
                parameter.normal_(0.0, 0.5)
    return trainer, save_run(trainer, tmp_path / "run")


def test_an_adapter_run_serves_each_group_the_log_probabilities_training_gives_it(adapter_run) -> None:
    trainer, run_dir = adapter_run
    tokenizer, completions = trainer.processing_class, ["up up down", "left right"]
    trained_prompts = dict(zip(trainer.train_dataset["group"], trainer.train_dataset["prompt"], strict=True))
    every_group = serve(run_dir)
    assert every_group.conditioning.kind == "prompt+adapter" and every_group.group is None
    trained = {}
    for group, raw in PROMPTS.items():
        prompts = [trained_prompts[group]] * len(completions)
        with trainer.group_adapters.route([group] * len(completions)):
            trained[group], _ = sequence_logprobs(trainer.model, tokenizer, prompts, completions)
        served = serve(run_dir, group)
        assert served.prompts([raw], [group]) == [trained_prompts[group]] == [f"group {group} {raw}"]
        merged, _ = sequence_logprobs(served.model, tokenizer, served.prompts([raw] * 2, [group] * 2), completions)
        torch.testing.assert_close(merged, trained[group], atol=1e-4, rtol=1e-4)
        routed, _ = sequence_logprobs(every_group.model, tokenizer, prompts, completions, groups=[group] * 2)
        torch.testing.assert_close(routed, trained[group], atol=1e-4, rtol=1e-4)
    assert (trained["big"] - trained["small"]).abs().min() > 0.05  # misrouting would show


def test_a_model_folder_is_served_with_its_adapters_and_the_conditioning_given(adapter_run) -> None:
    _, run_dir = adapter_run
    folder = serve(run_dir / "final", "small")  # no config.yaml: its adapters, no text unless given
    assert folder.conditioning.kind == "adapter"
    assert folder.prompts(["say up"], ["small"]) == ["say up"]
    from_run = serve(run_dir, "small")
    for mine, theirs in zip(folder.model.parameters(), from_run.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    with pytest.raises(ValueError, match="is a run directory"):
        serve(run_dir, "small", conditioning=from_run.conditioning)
    with pytest.raises(ValueError, match="give the group of each prompt's user"):
        serve(run_dir).answer(["say up"])
