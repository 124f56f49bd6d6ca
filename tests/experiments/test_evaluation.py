"""Held-out evaluation: batched completion log-probabilities equal one-at-a-time ones; prompts per group; the
capability probe's perplexity on held-out real text."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from pgrpo.experiments.evaluation import (
    balanced_rows,
    evaluate_policy,
    perplexity,
    policy_perplexity,
    sequence_logprobs,
)
from pgrpo.models.adapters import GroupAdapters, route_groups
from pgrpo.testing import toy_task
from tests.trainer.test_adapters import randomize_group_adapters


def test_batched_logprobs_equal_one_sequence_at_a_time(toy_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    prompts = ["say something", "say something for group big", "for", "group small say", "up", "say"]
    completions = ["up up down", "", "left right left right up down up", "small", "big big big big big", "down"]
    expected_totals, expected_counts = [], []
    with torch.no_grad():  # the plain way: one unpadded sequence per forward pass
        for prompt, completion in zip(prompts, completions, strict=True):
            prompt_ids = tokenizer(prompt)["input_ids"]
            completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            logits = model(torch.tensor([prompt_ids + completion_ids])).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            expected_totals.append(sum(logp[len(prompt_ids) + t - 1, token].item()
                                       for t, token in enumerate(completion_ids)))  # fmt: skip
            expected_counts.append(len(completion_ids))
    for batch_size in (1, 4, 16):  # one batch, a full and a ragged batch, one sequence each
        totals, counts = sequence_logprobs(model, tokenizer, prompts, completions, batch_size=batch_size)
        torch.testing.assert_close(
            totals.double(), torch.tensor(expected_totals, dtype=torch.float64), atol=1e-5, rtol=0
        )
        assert counts.tolist() == expected_counts
    assert expected_counts == [4, 1, 8, 2, 6, 2]  # words of each completion + EOS


def test_batched_perplexity_equals_one_text_at_a_time(toy_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    texts = ["say something for group big up up", "up", "down left", "group small say up down left right", "say up"]
    nll, tokens = 0.0, 0
    with torch.no_grad():  # the plain way: one unpadded text per forward pass; a one-token text predicts nothing
        for text in texts:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            logps = torch.log_softmax(model(ids).logits[0, :-1].double(), -1).gather(1, ids[0, 1:, None])
            nll, tokens = nll - float(logps.sum()), tokens + ids.shape[1] - 1
    assert tokens == 6 + 0 + 1 + 6 + 1
    for batch_size in (1, 2, 16):
        assert math.isclose(
            perplexity(model, tokenizer, texts, batch_size=batch_size), math.exp(nll / tokens), rel_tol=1e-5
        )


def test_batched_perplexity_routes_each_text_through_its_groups_adapter(toy_model_dir: str) -> None:
    """Texts batched by length, not in the given order: each still goes through its own group's adapter."""
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    adapters = GroupAdapters(model, ["a", "b"], r=4, alpha=8)
    randomize_group_adapters(adapters, torch.Generator().manual_seed(0))  # adapters that differ on purpose
    texts = ["say something for group big up up", "down left", "group small say up down left right", "say up"]
    groups = ["a", "b", "b", "a"]  # the given order is not the length order
    nll, tokens = 0.0, 0
    with torch.no_grad():  # one unpadded text per forward, routed alone
        for text, group in zip(texts, groups, strict=True):
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            with route_groups(model, [group]):
                logps = torch.log_softmax(model(ids).logits[0, :-1].double(), -1).gather(1, ids[0, 1:, None])
            nll, tokens = nll - float(logps.sum()), tokens + ids.shape[1] - 1
    expected = math.exp(nll / tokens)
    assert math.isclose(perplexity(model, tokenizer, texts, groups, batch_size=2), expected, rel_tol=1e-5)
    swapped = perplexity(model, tokenizer, texts, ["b", "a", "a", "b"], batch_size=2)
    assert abs(swapped / expected - 1) > 0.01  # the adapters matter


def test_a_policy_not_updated_takes_its_perplexity_from_the_initial_policys_cache(toy_model_dir: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    base = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.1)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(toy_model_dir), config).eval()
    texts = ["up up down left", "say something for group big", "right right small"]
    measured = perplexity(policy, tokenizer, texts)
    assert measured == perplexity(base, tokenizer, texts)  # a LoRA that starts at B = 0 adds exactly 0
    cache = {tuple(texts): 123.0}
    assert policy_perplexity(policy, policy, tokenizer, texts, None, cache) == 123.0  # looked up, not run again
    assert policy_perplexity(policy, base, tokenizer, texts, None, cache) == measured  # an updated policy: measured
    empty: dict = {}
    assert policy_perplexity(policy, policy, tokenizer, texts, None, empty) == measured
    assert empty == {tuple(texts): measured}  # what the trained runs after it read as their initial policy's


def test_evaluation_counts_prompts_per_group_round_robin(toy_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    task = toy_task()  # held out: 12 "big" and 4 "small" prompts
    other = AutoModelForCausalLM.from_pretrained(toy_model_dir)
    with torch.no_grad():
        other.lm_head.weight.add_(0.5 * torch.randn_like(other.lm_head.weight))
    cache: dict = {}
    results = evaluate_policy(model, tokenizer, task, other, num_prompts=10, samples=2, max_new_tokens=4,
                              reference_cache=cache)  # fmt: skip
    assert results["per_group_prompts"] == {"big": 6, "small": 4}  # big, small alternate until small runs out
    assert results["num_prompts"] == 10 and set(results["per_group_sampled"]) == {"big", "small"}
    assert results["kl_to_initial"] > 0.01 and results["perplexity_initial"] != results["perplexity"]  # estimated
    assert list(cache.values()) == [results["perplexity_initial"]]
    itself = evaluate_policy(model, tokenizer, task, model, num_prompts=10, samples=2, max_new_tokens=4,
                             reference_cache={})  # fmt: skip
    assert itself["kl_to_initial"] == 0.0  # a policy against itself (a frozen reference run): not estimated
    assert itself["perplexity_initial"] == itself["perplexity"] == results["perplexity"]


def test_capability_probe_reads_the_held_out_real_text_of_the_evaluated_rows(toy_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    task = toy_task()
    texts = [f"{'up down' if i % 2 else 'left right left'} big small {i}" for i in range(len(task.eval_dataset))]
    probed = replace(task, eval_dataset=task.eval_dataset.add_column("reference_text", texts))
    results = evaluate_policy(model, tokenizer, probed, reference=model, num_prompts=6, samples=1, max_new_tokens=2)
    evaluated = balanced_rows(probed.eval_dataset.to_list(), "group", 6)  # the rows evaluated, not the first six
    nll, tokens = 0.0, 0
    with torch.no_grad():  # independent reference: next-token log-probabilities summed over every probe text
        for row in evaluated:
            ids = tokenizer(row["reference_text"], add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            nll -= sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)))
            tokens += len(ids) - 1
    assert math.isclose(results["perplexity_reference_text"], math.exp(nll / tokens), rel_tol=1e-5)
    assert results["perplexity_reference_text_initial"] == results["perplexity_reference_text"]
    assert not math.isclose(results["perplexity_reference_text"], results["perplexity"], rel_tol=1e-3)
    assert "perplexity_reference_text" not in evaluate_policy(model, tokenizer, task, num_prompts=4, samples=1,
                                                              max_new_tokens=2)  # fmt: skip


def test_held_out_samples_come_from_the_sampler_training_used(toy_model_dir: str) -> None:
    from pgrpo.experiments.train import sampling_options
    from pgrpo.trainer import PGRPOConfig

    config = PGRPOConfig(output_dir="unused", use_cpu=True, temperature=0.7, top_k=None, min_p=0.05)
    expected = {"temperature": 0.7, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, "min_p": 0.05}
    assert sampling_options(config) == expected  # top_k 0: no truncation (transformers' default is 50)
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    task = toy_task()
    cold = evaluate_policy(model, tokenizer, task, num_prompts=8, samples=2, max_new_tokens=5,
                           sampling={"temperature": 1e-6, "top_k": 0})  # fmt: skip
    assert [e["sampled"] for e in cold["examples"]] == [e["greedy"] for e in cold["examples"]]  # options reach it
    hot = evaluate_policy(model, tokenizer, task, num_prompts=8, samples=2, max_new_tokens=5,
                          sampling={"temperature": 50.0, "top_k": 0}, greedy=False)  # fmt: skip
    assert [e["sampled"] for e in hot["examples"]] != [e["greedy"] for e in cold["examples"]]
    assert "reward_greedy" not in hot and "per_group_greedy" not in hot and hot["worst_group_sampled"] >= 0


def test_the_initial_policys_perplexities_are_scored_once_per_cache(toy_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    other = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    with torch.no_grad():
        other.lm_head.weight.mul_(3.0)  # a reference that predicts differently
    initial = AutoModelForCausalLM.from_pretrained(
        toy_model_dir
    ).eval()  # an equal copy (the policy itself is not scored)
    cache: dict = {}
    first = evaluate_policy(model, tokenizer, toy_task(), initial, num_prompts=6, samples=1, reference_cache=cache)
    assert list(cache.values()) == [first["perplexity_initial"]]  # keyed by the texts scored
    cached = evaluate_policy(model, tokenizer, toy_task(), other, num_prompts=6, samples=1, reference_cache=cache)
    fresh = evaluate_policy(model, tokenizer, toy_task(), other, num_prompts=6, samples=1)
    assert cached["perplexity_initial"] == first["perplexity_initial"] != fresh["perplexity_initial"]


def test_kl_on_fewer_samples_and_no_prompt_perplexity_when_asked(toy_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    other = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    with torch.no_grad():
        other.lm_head.weight.mul_(2.0)
    full = evaluate_policy(model, tokenizer, toy_task(), other, num_prompts=6, samples=3, max_new_tokens=4)
    first = evaluate_policy(model, tokenizer, toy_task(), other, num_prompts=6, samples=3, max_new_tokens=4,
                            kl_samples=1, prompt_perplexity=False)  # fmt: skip
    assert full["per_group_sampled"] == first["per_group_sampled"]  # the same samples, scored alike
    assert first["kl_to_initial"] != full["kl_to_initial"] and math.isfinite(first["kl_to_initial"])
    assert "perplexity" not in first and "perplexity_initial" not in first and "perplexity" in full


def test_a_group_without_any_finite_reward_is_counted_not_a_crash(toy_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)

    def small_unscorable(completions: list[str], group: list[str], **_: object) -> list[float | None]:
        """NaN for every "small" completion, None for every other "big" one (as a reward model that gives up)."""
        big = iter(range(len(completions)))
        return [math.nan if g == "small" else (None if next(big) % 2 else 0.5) for g in group]

    task = replace(toy_task(), reward_fn=small_unscorable)
    results = evaluate_policy(model, tokenizer, task, num_prompts=10, samples=2, max_new_tokens=2)
    assert math.isnan(results["per_group_sampled"]["small"]) and results["per_group_sampled"]["big"] == 0.5
    assert results["per_group_nonfinite_sampled"] == {"big": 6, "small": 8}  # 6 big and 4 small prompts x 2 samples
    assert results["per_group_nonfinite_greedy"] == {"big": 3, "small": 4}
    assert results["worst_group_sampled"] == 0.5  # the groups that have a mean
    assert math.isnan(results["majority_minus_minority_sampled"])  # the minority has no mean

    task = replace(toy_task(), reward_fn=lambda completions, **_: [math.nan] * len(completions))
    results = evaluate_policy(model, tokenizer, task, num_prompts=4, samples=1, max_new_tokens=2)  # was: max() crash
    assert math.isnan(results["worst_group_sampled"]) and math.isnan(results["reward_sampled"])
    assert results["per_group_nonfinite_sampled"] == results["per_group_prompts"] == {"big": 2, "small": 2}
