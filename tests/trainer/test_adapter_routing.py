"""The loss forward routes each row through its own group's adapter, after TRL shuffles and splits the batch.

The reference is independent of our routing: each row's group is read back from its prompt tokens (every group has
its own prompt), and its log-probabilities are recomputed with that group's saved policy (``load_group_policy``: the
shared model with the group's adapter merged in, no hooks, no router). The adapters are made to differ on purpose, so
a row routed through another group's adapter (or none) would change its log-probabilities far beyond float noise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset

from pgrpo.models.serving import load_group_policy
from pgrpo.testing import CPU_ARGS, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer

PROMPTS = {"a": "say up", "b": "say down left", "c": "group right right"}  # distinct lengths: left padding varies


class LossForwardRecorder(PGRPOTrainer):
    """Keeps every loss forward's inputs and per-token log-probabilities, and each generation batch's prompt order."""

    def _generate_and_score_completions(self, inputs):
        self.__dict__.setdefault("generated", []).extend(row["prompt"] for row in inputs)
        return super()._generate_and_score_completions(inputs)

    def _compute_loss(self, model, inputs):
        self._recording = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._recording = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        output = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        if getattr(self, "_recording", None) is not None:
            inputs = self._recording
            entry = (input_ids, attention_mask, logits_to_keep, inputs["completion_mask"], output[0].detach().clone())
            self.__dict__.setdefault("loss_forwards", []).append(entry)
        return output


def completion_logps(model, input_ids, attention_mask, logits_to_keep: int, temperature: float) -> torch.Tensor:
    """(B, logits_to_keep) log-probability of each completion token under ``model``, written out with plain logits."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -logits_to_keep - 1 : -1]
    logps = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logps.gather(-1, input_ids[:, -logits_to_keep:, None]).squeeze(-1).float()


def group_of_row(trainer: PGRPOTrainer, prompt_ids: torch.Tensor) -> str:
    """The group whose prompt these (left-padded) tokens spell: read from the tokens, not from our routing."""
    text = trainer.processing_class.decode(prompt_ids, skip_special_tokens=True)
    return next(label for label, prompt in PROMPTS.items() if text == prompt)


def test_loss_forward_rows_match_their_own_group_policy(toy_model_dir: str, tmp_path: Path) -> None:
    groups = [label for _ in range(8) for label in PROMPTS]
    dataset = Dataset.from_dict({"prompt": [PROMPTS[g] for g in groups], "group": groups})
    args = PGRPOConfig(
        output_dir=str(tmp_path), max_steps=4, group_conditioning="adapter",
        **{**CPU_ARGS, "learning_rate": 0.0}, steps_per_generation=2,
    )  # fmt: skip  # lr 0: the policy of every loss forward is the one saved at the end
    trainer = LossForwardRecorder(model=toy_model_dir, reward_funcs=toy_reward, args=args, train_dataset=dataset)
    adapters = trainer.group_adapters
    with torch.no_grad():  # adapters that differ on purpose (PEFT starts B at 0: every group the shared policy)
        generator = torch.Generator().manual_seed(0)
        for index in range(len(adapters.names)):
            for key, parameter in adapters.parameters(index).items():
                parameter.normal_(std=0.5 if ".lora_B." in key else 0.3, generator=generator)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    policies = {label: load_group_policy(tmp_path / "final", label) for label in PROMPTS}

    forwards = trainer.loss_forwards
    assert len(forwards) == 4  # one loss forward per step: 2 generation batches, each shuffled and split in 2
    loss_order = []
    checked = dict.fromkeys(PROMPTS, 0)
    for input_ids, attention_mask, logits_to_keep, completion_mask, routed in forwards:
        prompt_ids = input_ids[:, :-logits_to_keep]
        labels = [group_of_row(trainer, ids) for ids in prompt_ids]
        loss_order.extend(PROMPTS[label] for label in labels)
        expected = {}
        with torch.no_grad():
            for label, policy in policies.items():
                expected[label] = completion_logps(
                    policy, input_ids, attention_mask, logits_to_keep, trainer.temperature
                )
        mask = completion_mask.bool()
        for row, label in enumerate(labels):
            own = expected[label][row][mask[row]]
            torch.testing.assert_close(routed[row][mask[row]], own, rtol=1e-5, atol=1e-5, msg=f"row {row} ({label})")
            for other in PROMPTS.keys() - {label}:  # another group's adapter would be caught
                assert (expected[other][row][mask[row]] - own).abs().max() > 1e-2, (label, other)
            checked[label] += 1
    assert all(count > 0 for count in checked.values()), checked  # every group's rows went through the loss
    assert sorted(loss_order) == sorted(trainer.generated) and loss_order != trainer.generated  # TRL shuffled them
