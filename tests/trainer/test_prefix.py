"""Shared prompt prefixes (pgrpo.models.prefix): each distinct prompt through the body once, the same results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset

from pgrpo.models.prefix import distinct_rows, generate_with_shared_prefill
from pgrpo.testing import CPU_ARGS, build_toy_model_dir, toy_dataset, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
from tests.trainer.test_adapters import randomize_group_adapters
from tests.trainer.test_cpu_fast_path import loss_pass, trained_trl_reference

PROMPTS, GENERATIONS, PROMPT, COMPLETION = 4, 3, 6, 5


@pytest.fixture(scope="module")
def two_layer_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_toy_model_dir(tmp_path_factory.mktemp("two_layers"), num_layers=2)


def make_trainer(
    model_dir: str, output_dir: Path, max_steps: int = 1, train_dataset: Dataset | None = None, **overrides
) -> PGRPOTrainer:
    args = PGRPOConfig(output_dir=str(output_dir), max_steps=max_steps, estimator="grpo", **{**CPU_ARGS, **overrides})
    dataset = toy_dataset() if train_dataset is None else train_dataset
    return PGRPOTrainer(model=model_dir, reward_funcs=toy_reward, args=args, train_dataset=dataset)


def grpo_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GRPO's layout, shuffled: 4 left-padded prompts x 3 completions, one completion ended early.

    Returns (prompt ids, prompt mask) of the distinct prompts and (ids, mask) of the 12 prompt + completion rows.
    """
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (PROMPTS, PROMPT), generator=generator)
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[1, :2] = prompt_mask[2, :1] = 0
    prompts = prompts.masked_fill(prompt_mask == 0, 0)
    rows = PROMPTS * GENERATIONS
    ids = torch.cat([prompts.repeat_interleave(GENERATIONS, 0), torch.randint(3, vocab, (rows, COMPLETION))], 1)
    mask = torch.cat([prompt_mask.repeat_interleave(GENERATIONS, 0), torch.ones(rows, COMPLETION, dtype=torch.long)], 1)
    mask[0, -2:] = 0
    order = torch.randperm(rows, generator=generator)
    return prompts, prompt_mask, ids[order], mask[order]


class BodyInputs:
    """The (rows, positions) of every call of the model's body."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.shapes: list[tuple[int, int]] = []
        body = model.get_decoder()
        self.handle = body.register_forward_pre_hook(
            lambda module, args, kwargs: self.shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
        )


def test_distinct_rows_against_a_python_reference() -> None:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 3, (40, 2), generator=generator)
    mask = torch.randint(0, 2, (40, 2), generator=generator)
    first, inverse = distinct_rows(ids, mask)
    seen: dict[tuple, int] = {}
    for row in range(len(ids)):
        seen.setdefault((*ids[row].tolist(), *mask[row].tolist()), row)
    assert first.tolist() == list(seen.values())  # first occurrences, in order
    expected = [list(seen).index((*ids[row].tolist(), *mask[row].tolist())) for row in range(len(ids))]
    assert inverse.tolist() == expected


@pytest.mark.parametrize("grad", [False, True])
def test_loss_forward_runs_each_prompt_once_with_the_same_logps_entropies_and_gradients(
    two_layer_model_dir: str, tmp_path: Path, grad: bool
) -> None:
    trainer = make_trainer(two_layer_model_dir, tmp_path)
    model = trainer.model
    _, _, ids, mask = grpo_batch(model.config.vocab_size)
    body = BodyInputs(model)
    results = {}
    for share in (False, True):
        trainer.share_prompt_prefix = share
        results[share] = loss_pass(trainer, ids, mask, COMPLETION, grad)
    rows, length = ids.shape
    # unshared: every row's every position; shared: the distinct prompts but their last position, then every row
    # from the last prompt position on (the position that predicts the first completion token)
    assert body.shapes == [(rows, length), (PROMPTS, PROMPT - 1), (rows, COMPLETION + 1)]
    (logps, entropies, grads), (shared_logps, shared_entropies, shared_grads) = results[False], results[True]
    assert shared_logps.shape == logps.shape == (rows, COMPLETION)
    torch.testing.assert_close(shared_logps, logps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shared_entropies, entropies, rtol=1e-5, atol=1e-6)
    assert bool((shared_logps[mask[:, -COMPLETION:] == 0] == 0).all())
    # with gradients, they reach every weight through the shared prompt cache, as without it
    assert len(shared_grads) == len(grads) == (len(list(model.parameters())) if grad else 0)
    for mine, theirs in zip(shared_grads, grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_generation_prefills_each_prompt_once_and_generates_the_same_tokens(
    two_layer_model_dir: str, tmp_path: Path
) -> None:
    model = make_trainer(two_layer_model_dir, tmp_path).model
    prompts, prompt_mask, _, _ = grpo_batch(model.config.vocab_size)
    ids, mask = prompts.repeat_interleave(GENERATIONS, 0), prompt_mask.repeat_interleave(GENERATIONS, 0)
    options = {"do_sample": False, "max_new_tokens": 6, "return_dict_in_generate": True, "output_scores": True}
    body = BodyInputs(model)
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=mask, **options)
        prefill_calls = len(body.shapes)
        shared = generate_with_shared_prefill(model, model.generate, ids, mask, **options)
    assert body.shapes[0] == (len(ids), PROMPT) and body.shapes[prefill_calls] == (PROMPTS, PROMPT - 1)
    assert body.shapes[prefill_calls + 1] == (len(ids), 1)  # then every row from its last prompt token
    assert torch.equal(shared.sequences, plain.sequences)
    for mine, theirs in zip(shared.scores, plain.scores, strict=True):  # left-padded rows' positions included
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_trainer_with_shared_prompts_trains_as_trl(two_layer_model_dir: str, tmp_path: Path) -> None:
    reference = trained_trl_reference(two_layer_model_dir, tmp_path / "trl", max_steps=3)
    ours = make_trainer(two_layer_model_dir, tmp_path / "ours", max_steps=3)
    ours.inverse_cdf_sampling = False  # the same completions as TRL's draws (tests/models/test_token_sampling.py)
    body = BodyInputs(ours.model)
    ours.train()
    prompt_tokens = len(ours.processing_class("say something for group big")["input_ids"])
    rows = CPU_ARGS["per_device_train_batch_size"]
    prefills = [shape for shape in body.shapes if shape[1] == prompt_tokens - 1]  # generation's and the loss's
    assert len(prefills) == 2 * 3 and all(shape[0] < rows for shape in prefills)
    # every row's call covers at most the last prompt position and the completion
    assert all(shape[1] <= 1 + CPU_ARGS["max_completion_length"] for shape in body.shapes if shape[0] == rows)
    losses = [e["loss"] for e in ours.state.log_history if "loss" in e]
    expected = [e["loss"] for e in reference.state.log_history if "loss" in e]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=1e-4, atol=1e-6)
    theirs = reference.model.state_dict()
    for name, mine in ours.model.state_dict().items():
        torch.testing.assert_close(mine, theirs[name], rtol=1e-4, atol=1e-6, msg=name)


def adapter_rows(ids: torch.Tensor) -> torch.Tensor:
    """Each row's adapter (0, 1; -1 = shared weights): by prompt, except that one prompt's rows are split between
    adapters 0 and 1 and one more prompt's between adapter 1 and the shared weights (anonymous users: the same
    request from two groups)."""
    _, prompt = distinct_rows(ids[:, :PROMPT])
    rows = prompt % 2
    rows[(prompt == 0).nonzero()[0]] = 1 - rows[(prompt == 0).nonzero()[0]]
    rows[(prompt == 1).nonzero()[0]] = -1
    return rows


@pytest.mark.parametrize("grad", [False, True])
def test_group_adapters_share_a_prompt_only_within_its_adapter(
    two_layer_model_dir: str, tmp_path: Path, grad: bool
) -> None:
    trainer = make_trainer(two_layer_model_dir, tmp_path, group_conditioning="adapter")
    randomize_group_adapters(trainer.group_adapters, torch.Generator().manual_seed(0))
    model = trainer.model
    _, _, ids, mask = grpo_batch(model.config.vocab_size)
    rows = adapter_rows(ids)
    assert len(distinct_rows(ids[:, :PROMPT], rows)[0]) == PROMPTS + 2
    body = BodyInputs(model)
    results = {}
    for share in (False, True):
        trainer.share_prompt_prefix = share
        with trainer.group_adapters.router.route(rows):
            results[share] = loss_pass(trainer, ids, mask, COMPLETION, grad)
    # the prompt pass runs once per distinct (prompt, adapter) pair: 4 prompts, two of them split in two
    assert body.shapes == [tuple(ids.shape), (PROMPTS + 2, PROMPT - 1), (len(ids), COMPLETION + 1)]
    (logps, entropies, grads), (shared_logps, shared_entropies, shared_grads) = results[False], results[True]
    torch.testing.assert_close(shared_logps, logps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shared_entropies, entropies, rtol=1e-5, atol=1e-6)
    assert len(shared_grads) == len(grads) == (len([p for p in model.parameters() if p.requires_grad]) if grad else 0)
    for mine, theirs in zip(shared_grads, grads, strict=True):  # summation order: relative to the tensor's scale
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5 * float(theirs.abs().max()))
    # in TRL's chunks (5 + 5 + 2 rows, each routed with its own rows), sharing within each chunk: the same
    with trainer.group_adapters.router.route(rows):
        chunked, _, chunked_grads = loss_pass(trainer, ids, mask, COMPLETION, grad, batch_size=5)
    chunks = [distinct_rows(ids[c, :PROMPT], rows[c])[0] for c in (slice(0, 5), slice(5, 10), slice(10, 12))]
    shared_chunks = [len(first) for first, size in zip(chunks, (5, 5, 2), strict=True) if len(first) < size]
    assert shared_chunks and [n for n, positions in body.shapes[3:] if positions == PROMPT - 1] == shared_chunks
    torch.testing.assert_close(chunked, logps, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(chunked_grads, grads, strict=True):  # summed in another order
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))
    # the adapters matter: the same rows through the shared weights alone give other log-probabilities
    with trainer.group_adapters.router.route(torch.full_like(rows, -1)):
        unrouted, _, _ = loss_pass(trainer, ids, mask, COMPLETION, grad=False)
    assert (unrouted - logps).abs().max() > 0.05


def test_generation_with_group_adapters_prefills_each_prompt_and_adapter_once(
    two_layer_model_dir: str, tmp_path: Path
) -> None:
    trainer = make_trainer(two_layer_model_dir, tmp_path, group_conditioning="adapter")
    randomize_group_adapters(trainer.group_adapters, torch.Generator().manual_seed(0))
    model, router = trainer.model, trainer.group_adapters.router
    prompts, prompt_mask, _, _ = grpo_batch(model.config.vocab_size)
    ids, mask = prompts.repeat_interleave(GENERATIONS, 0), prompt_mask.repeat_interleave(GENERATIONS, 0)
    rows = adapter_rows(ids)
    options = {"do_sample": False, "max_new_tokens": 6, "return_dict_in_generate": True, "output_scores": True}
    body = BodyInputs(model)
    with torch.no_grad(), router.route(rows):
        plain = model.generate(input_ids=ids, attention_mask=mask, **options)
        prefill_calls = len(body.shapes)
        shared = generate_with_shared_prefill(model, model.generate, ids, mask, router, **options)
        without_routing = model.generate(input_ids=ids, attention_mask=mask, **options)  # routing restored
    assert body.shapes[prefill_calls] == (PROMPTS + 2, PROMPT - 1)
    assert torch.equal(shared.sequences, plain.sequences) and torch.equal(without_routing.sequences, plain.sequences)
    for mine, theirs in zip(shared.scores, plain.scores, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), router.route(torch.full_like(rows, -1)):  # the adapters matter
        unrouted = model.generate(input_ids=ids, attention_mask=mask, **options)
    assert max(float((a - b).abs().max()) for a, b in zip(unrouted.scores, plain.scores, strict=True)) > 0.05


def test_trainer_with_group_adapters_and_shared_prompts_trains_as_without_sharing(
    two_layer_model_dir: str, tmp_path: Path
) -> None:
    """Anonymous users (every prompt the same text, two groups): a batch's rows share the prompt within a group only,
    and three steps train the shared weights and every group's adapter as the unshared trainer does. SGD, so that
    each update is the gradient (Adam turns float noise on near-zero gradients into updates of the learning rate)."""
    groups = ["small" if i % 4 == 0 else "big" for i in range(32)]
    dataset = Dataset.from_dict({"prompt": ["say something for group"] * len(groups), "group": groups})
    trainers, bodies = {}, {}
    for share in (False, True):
        trainer = make_trainer(
            two_layer_model_dir, tmp_path / str(share), max_steps=3, group_conditioning="adapter",
            group_sampling_alpha=0.0, optim="sgd", learning_rate=0.1, train_dataset=dataset,
        )  # fmt: skip  # balanced sampling: both groups in most batches
        randomize_group_adapters(trainer.group_adapters, torch.Generator().manual_seed(0))
        trainer.share_prompt_prefix = share
        bodies[share] = BodyInputs(trainer.model)
        initial = {name: weight.clone() for name, weight in trainer.model.state_dict().items()}
        trainer.train()
        trainers[share] = trainer
    prompt_tokens = len(trainers[True].processing_class("say something for group")["input_ids"])
    prefills = [rows for rows, positions in bodies[True].shapes if positions == prompt_tokens - 1]
    assert len(prefills) == 2 * 3 and set(prefills) <= {1, 2} and 2 in prefills  # one per (prompt, group) present
    assert all(rows == CPU_ARGS["per_device_train_batch_size"] for rows, _ in bodies[False].shapes)
    losses = {share: [e["loss"] for e in t.state.log_history if "loss" in e] for share, t in trainers.items()}
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-4, atol=1e-6)
    theirs = trainers[False].model.state_dict()
    for name, mine in trainers[True].model.state_dict().items():
        update = theirs[name] - initial[name]
        torch.testing.assert_close(mine - initial[name], update, rtol=0, atol=1e-6 + 1e-2 * float(update.abs().max()))
    assert any(".lora_B.group_small" in name and (w - initial[name]).abs().max() > 1e-4 for name, w in theirs.items())


def test_a_model_that_returns_no_shareable_cache_gets_the_unshared_call(
    two_layer_model_dir: str, tmp_path: Path
) -> None:
    """Activation checkpointing turned on on the model itself (not in the trainer's args) drops the prompt cache while
    training: the shared call must notice and run every row in full, with the same log-probabilities."""
    trainer = make_trainer(two_layer_model_dir, tmp_path)
    model = trainer.model
    _, _, ids, mask = grpo_batch(model.config.vocab_size)
    trainer.share_prompt_prefix = False
    expected, _, _ = loss_pass(trainer, ids, mask, COMPLETION, grad=True)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model.train()
    trainer.share_prompt_prefix = True
    body = BodyInputs(model)
    logps, _, grads = loss_pass(trainer, ids, mask, COMPLETION, grad=True)
    assert body.shapes[-1] == ids.shape  # the prompt pass gave no cache: every row's every position
    torch.testing.assert_close(logps, expected, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(list(model.parameters()))
