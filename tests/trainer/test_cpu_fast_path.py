"""The CPU fast path (pgrpo.trainer.cpu) does less work; its LM head and threads keep the step's math bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import trl.trainer.utils as trl_utils
from trl import GRPOTrainer

import pgrpo.models.token_sampling as token_sampling
from pgrpo.testing import CPU_ARGS, toy_dataset, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
from pgrpo.trainer.cpu import compact_lm_head, torch_threads


def make_trainer(model_dir: str, output_dir: Path, fast: bool, max_steps: int = 3, **overrides) -> PGRPOTrainer:
    args = PGRPOConfig(output_dir=str(output_dir), max_steps=max_steps, estimator="grpo", **{**CPU_ARGS, **overrides})
    trainer = PGRPOTrainer(model=model_dir, reward_funcs=toy_reward, args=args, train_dataset=toy_dataset())
    trainer.cpu_fast_path = fast
    return trainer


def padded_batch(vocab: int, rows: int = 6, prompt: int = 7, completion: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of left-padded prompts followed by right-padded completions."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (rows, prompt + completion), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(rows):
        mask[row, : row % 3] = 0  # prompt padding on the left
        mask[row, prompt + completion - row % 4 :] = 0  # a completion that ended early
    return ids.masked_fill(mask == 0, 0), mask


def trained_trl_reference(model_dir: str, output_dir: Path, max_steps: int) -> GRPOTrainer:
    """TRL's own GRPOTrainer on the toy task, trained for ``max_steps``: what the fast path is compared with."""
    reference = GRPOTrainer(
        model=model_dir,
        reward_funcs=toy_reward,
        args=PGRPOConfig(output_dir=str(output_dir), max_steps=max_steps, estimator="grpo", **CPU_ARGS),
        train_dataset=toy_dataset(),
    )
    reference.train()
    return reference


def loss_pass(
    trainer: PGRPOTrainer,
    ids: torch.Tensor,
    mask: torch.Tensor,
    completion: int,
    grad: bool,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The trainer's log-probabilities and entropies of the completions (in chunks of ``batch_size`` rows, as TRL
    asks, or at once), and (with ``grad``) the parameters' gradients of a fixed weighting of the log-probabilities
    (the gradients present, in parameter order)."""
    model = trainer.model
    model.zero_grad()
    with torch.set_grad_enabled(grad):
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, mask, completion, batch_size=batch_size, compute_entropy=True
        )
    if grad:
        (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
    return logps.detach(), entropies.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


class HeadRows:
    """Counts the positions TRL's chunked LM head projects (the rows of its input)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[int] = []
        original = trl_utils._ChunkedLogProbFunction.apply

        def apply(hidden, *args):
            self.rows.append(hidden.shape[0])
            return original(hidden, *args)

        monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", apply)


@pytest.mark.parametrize("grad", [False, True])
def test_head_scores_only_completion_tokens_with_the_same_logps_and_gradients(
    toy_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grad: bool
) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, fast=True)
    model = trainer.model
    ids, mask = padded_batch(model.config.vocab_size)
    completion = 5
    head = HeadRows(monkeypatch)
    results = {}
    for fast in (False, True):
        trainer.cpu_fast_path = fast
        results[fast] = loss_pass(trainer, ids, mask, completion, grad)
    # TRL's CPU path projects every position but the last; the fast path only the completion tokens present
    assert head.rows == [ids.shape[0] * (ids.shape[1] - 1), int(mask[:, -completion:].sum())]
    (slow_logps, slow_entropies, slow_grads), (fast_logps, fast_entropies, fast_grads) = results[False], results[True]
    assert torch.equal(fast_logps, slow_logps) and torch.equal(fast_entropies, slow_entropies)
    assert bool((fast_logps[mask[:, -completion:] == 0] == 0).all())
    assert len(fast_grads) == len(slow_grads) == (len(list(model.parameters())) if grad else 0)
    for mine, theirs in zip(fast_grads, slow_grads, strict=True):
        assert torch.equal(mine, theirs)


def test_fast_path_trains_exactly_as_trl_and_restores_the_head_switch(toy_model_dir: str, tmp_path: Path) -> None:
    reference = trained_trl_reference(toy_model_dir, tmp_path / "trl", max_steps=4)
    ours = make_trainer(toy_model_dir, tmp_path / "ours", fast=True, max_steps=4)
    ours.share_prompt_prefix = False  # equal up to summation order only: tests/trainer/test_prefix.py
    ours.inverse_cdf_sampling = False  # the same distribution, another stream: tests/models/test_token_sampling.py
    ours.train()
    assert [e["loss"] for e in ours.state.log_history if "loss" in e] == [
        e["loss"] for e in reference.state.log_history if "loss" in e
    ]
    theirs = reference.model.state_dict()
    for name, mine in ours.model.state_dict().items():
        assert torch.equal(mine, theirs[name]), name
    assert not trl_utils._use_triton(torch.device("cpu"))  # the switch is TRL's own again outside the block


def test_generation_runs_on_generation_threads_and_restores_torch_threads(
    toy_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, fast=True, max_steps=1)
    seen: list[int] = []
    generate = trainer.model.generate

    def recording_generate(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return generate(*args, **kwargs)

    monkeypatch.setattr(trainer.model, "generate", recording_generate)
    with torch_threads(2):
        trainer.train()
        assert torch.get_num_threads() == 2
        trainer.cpu_fast_path = False
        trainer._generate_single_turn([[5, 6, 7]], None, {}, 1)
    assert seen == [1, 2]


@pytest.mark.parametrize("inverse_cdf", [True, False])
def test_training_draws_completions_by_inverse_cdf_unless_turned_off(
    toy_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inverse_cdf: bool
) -> None:
    original, draws = torch.multinomial, []
    draw = token_sampling.draw_from_cdf
    monkeypatch.setattr(token_sampling, "draw_from_cdf", lambda cdf, g=None: draws.append(1) or draw(cdf, g))
    trainer = make_trainer(toy_model_dir, tmp_path, fast=True, max_steps=2)
    trainer.inverse_cdf_sampling = inverse_cdf
    trainer.train()
    # one draw per completion token of the 2 generation batches, or none
    assert len(draws) == (2 * CPU_ARGS["max_completion_length"] if inverse_cdf else 0)
    assert torch.multinomial is original


def test_compact_lm_head_restores_the_switch_after_an_error() -> None:
    original = trl_utils._use_triton
    with pytest.raises(RuntimeError), compact_lm_head():
        assert trl_utils._use_triton(torch.device("cpu"))
        raise RuntimeError("inside")
    assert trl_utils._use_triton is original
