"""Held-out evaluation of a policy on a task: per-group reward (sampled and greedy) and capability retention.

    results = evaluate_policy(model, tokenizer, task, reference=initial_model)

``num_prompts`` held-out prompts are taken round-robin over the groups (``per_group_prompts`` in the
results counts each group's; a group gets fewer only when its held-out rows run out). Per group p:
mean reward of ``samples`` sampled completions and of the greedy completion. Overall, worst-group
and majority-minus-smallest-group gaps. Capability retention: the per-token KL(policy || reference)
estimated on the policy's own samples, E_y~pi[log pi(y) - log ref(y)] / |y|, and the perplexity of
both on held-out prompt text and, where the task gives it (``reference_text``, e.g. the real review behind each
held-out reviews prompt), on held-out real text that training never showed the policy.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pgrpo.core.conditioning import Prompt, PromptConditioning
from pgrpo.models import encode_prompts, generate_completions, routed
from pgrpo.tasks import Task


def score(task: Task, rows: list[dict[str, Any]], completions: list[str], prompts: list[Prompt]) -> list[float]:
    """Task rewards for ``completions``, row i answering ``rows[i]`` (every column reaches the reward) asked as
    ``prompts[i]`` (the prompt as the policy read it, as TRL passes it in training)."""
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
    rewards = task.reward_fn(prompts=prompts, completions=completions, **columns)
    return [math.nan if r is None else float(r) for r in rewards]


def policy_prompt(prompt: str, label: Any, chat: bool, conditioning: PromptConditioning | None) -> Prompt:
    """A task prompt as the policy is given it in training: a user message for chat models, conditioned on the
    group ``label`` when ``conditioning`` is given (as ``PGRPOTrainer`` conditions its datasets)."""
    message: Prompt = [{"role": "user", "content": prompt}] if chat else prompt
    return conditioning.apply(message, label) if conditioning is not None else message


def as_model_input(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, chat: bool) -> str:
    """The prompt as the model reads it (for reports): plain, or a user message through the chat template."""
    return tokenizer.decode(encode_prompts(tokenizer, [prompt], chat)[0])


def balanced_rows(rows: list[dict[str, Any]], group_column: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` rows taken round-robin across groups (in dataset order within each group)."""
    by_group: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_group[row[group_column]].append(row)
    queues = list(by_group.values())
    picked: list[dict[str, Any]] = []
    for depth in range(max(map(len, queues), default=0)):
        picked += [queue[depth] for queue in queues if depth < len(queue)]
    return picked[:limit]


def group_means(groups: list[Any], values: list[float]) -> dict[str, float]:
    """{str(group): mean of its finite values} for every group in ``groups`` (NaN for a group with none finite)."""
    by_group: dict[str, list[float]] = defaultdict(list)
    for group, value in zip(groups, values, strict=True):
        by_group[str(group)].append(value)
    return {group: _mean(v) for group, v in sorted(by_group.items())}


def group_nonfinite(groups: list[Any], values: list[float]) -> dict[str, int]:
    """{str(group): how many of its values are not finite} (NaN, None turned NaN, +-inf) for every group."""
    counts = Counter(str(group) for group in groups)
    bad = Counter(str(g) for g, v in zip(groups, values, strict=True) if not math.isfinite(v))
    return {group: bad[group] for group in sorted(counts)}


@torch.no_grad()
def sequence_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    completions: list[str],
    chat: bool = False,
    batch_size: int = 16,
    groups: list[Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of completion-token log-probabilities (N,) and completion token counts (N,).

    For prompt tokens x and completion tokens y (the completion text re-encoded, then EOS):
    log pi(y | x) = sum_t log softmax(logits at position |x| + t - 1)[y_t]. ``batch_size`` sequences go
    through the model at once, right-padded: every real token keeps its unpadded position and causal
    context (padding comes after it, so no attention mask is needed), and padded positions are left out
    of the sum.
    """
    sequences, starts = [], []
    for prompt_ids, completion in zip(encode_prompts(tokenizer, prompts, chat), completions, strict=True):
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        sequences.append(prompt_ids + completion_ids)
        starts.append(len(prompt_ids))
    totals = []
    for begin in range(0, len(sequences), batch_size):
        batch = sequences[begin : begin + batch_size]
        lengths = torch.tensor([len(ids) for ids in batch])
        ids = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)  # pads (id 0) follow all real tokens
        for row, sequence in enumerate(batch):
            ids[row, : len(sequence)] = torch.tensor(sequence)
        with routed(model, groups, slice(begin, begin + batch_size)):
            logits = model(input_ids=ids.to(model.device)).logits[:, :-1].float()
        token_logp = torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None].to(model.device))[..., 0].cpu()
        predicted = torch.arange(1, ids.shape[1])[None]  # the position of the token each logit row predicts
        first = torch.tensor(starts[begin : begin + batch_size])[:, None]
        totals.append((token_logp * ((predicted >= first) & (predicted < lengths[:, None]))).sum(1))
    counts = [len(sequence) - start for sequence, start in zip(sequences, starts, strict=True)]
    return torch.cat(totals), torch.tensor(counts, dtype=torch.float64)


@torch.no_grad()
def perplexity(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], groups: list[Any] | None = None
) -> float:
    """exp(mean token negative log-likelihood) of ``texts`` (text i routed through ``groups[i]``'s adapter)."""
    nll, tokens = 0.0, 0
    for index, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
        if ids.shape[1] < 2:
            continue
        with routed(model, groups, slice(index, index + 1)):
            out = model(ids, labels=ids)
        nll += out.loss.item() * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
    return math.exp(nll / max(tokens, 1))


def reference_text_perplexity(
    model: PreTrainedModel,
    reference: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    route: list[Any] | None,
) -> dict[str, float]:
    """Perplexity of the policy (and of ``reference``) on the rows' ``reference_text``, held-out real text; empty
    when the task gives none."""
    if not rows or "reference_text" not in rows[0]:
        return {}
    texts = [row["reference_text"] for row in rows]
    results = {"perplexity_reference_text": perplexity(model, tokenizer, texts, route)}
    if reference is not None:
        results["perplexity_reference_text_initial"] = perplexity(reference, tokenizer, texts)
    return results


def evaluate_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    reference: PreTrainedModel | None = None,
    num_prompts: int = 64,
    samples: int = 4,
    max_new_tokens: int = 32,
    seed: int = 0,
    chat: bool = False,
    group_column: str | None = None,
    conditioning: PromptConditioning | None = None,
    label_column: str | None = None,
    only_group: Any = None,
    adapters: bool = False,
) -> dict[str, Any]:
    """Per-group held-out rewards and capability retention (see the module docstring).

    ``chat``: give the model each prompt as a user message through its chat template (instruct models).
    ``group_column``: the held-out column that defines the groups (default: the task's).
    ``conditioning``: condition each prompt on its row's ``label_column`` (default ``group_column``): the labels the
    policy was trained with. ``only_group``: evaluate only this group's rows among the ``num_prompts`` balanced ones
    (a specialist: the same prompts as a shared policy's evaluation gives that group). ``adapters``: route each
    row through its ``label_column`` group's adapter (``group_conditioning="adapter"``).
    """
    group_column = group_column or task.group_column
    was_training = model.training
    model.eval()
    rows = balanced_rows(task.eval_dataset.to_list(), group_column, num_prompts)
    if only_group is not None:
        rows = [row for row in rows if str(row[group_column]) == str(only_group)]
    groups = [row[group_column] for row in rows]
    labels = [row[label_column or group_column] for row in rows]
    prompts = [policy_prompt(row["prompt"], label, chat, conditioning) for row, label in zip(rows, labels, strict=True)]
    route = labels if adapters else None
    torch.manual_seed(seed)
    greedy = generate_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens, chat=chat, groups=route)
    sampled_rows = [row for row in rows for _ in range(samples)]
    sampled_prompts = [p for p in prompts for _ in range(samples)]
    sampled_route = route and [label for label in route for _ in range(samples)]
    sampled = generate_completions(
        model, tokenizer, sampled_prompts, max_new_tokens, True, chat=chat, groups=sampled_route
    )
    model_inputs = [as_model_input(tokenizer, prompt, chat) for prompt in prompts]
    greedy_reward = score(task, rows, greedy, prompts)
    sampled_reward = score(task, sampled_rows, sampled, sampled_prompts)
    sampled_groups = [row[group_column] for row in sampled_rows]
    results: dict[str, Any] = {
        "num_prompts": len(rows),
        **group_rewards(task, group_column, groups, greedy_reward, sampled_groups, sampled_reward),
        "samples_per_prompt": samples,
        "perplexity": perplexity(model, tokenizer, model_inputs, route),
        **reference_text_perplexity(model, reference, tokenizer, rows, route),
        "examples": [
            {"group": str(g), "prompt": p, "greedy": c}
            for g, p, c in zip(groups[:8], model_inputs[:8], greedy[:8], strict=True)
        ],
    }
    if reference is not None:
        policy_logp, lengths = sequence_logprobs(model, tokenizer, sampled_prompts, sampled, chat, groups=sampled_route)
        reference_logp, _ = sequence_logprobs(reference, tokenizer, sampled_prompts, sampled, chat)
        results["kl_to_initial"] = ((policy_logp - reference_logp) / lengths).mean().item()
        results["perplexity_initial"] = perplexity(reference, tokenizer, model_inputs)
    model.train(was_training)
    return results


def group_rewards(
    task: Task,
    group_column: str,
    groups: list[Any],
    greedy_reward: list[float],
    sampled_groups: list[Any],
    sampled_reward: list[float],
) -> dict[str, Any]:
    """Held-out rewards overall and per group (greedy and sampled), the worst group, the majority-minority gap, the
    groups' train shares (the weights of the train-mix reward) and each group's count of non-finite rewards.

    A group whose rewards are all non-finite has mean NaN and is left out of the worst group (NaN when no group has a
    finite mean), as in training's ``group/worst_reward_mean``; ``per_group_nonfinite_*`` says how many were dropped.
    """
    per_group_sampled = group_means(sampled_groups, sampled_reward)
    per_group_greedy = group_means(groups, greedy_reward)
    shares = pd.Series(task.train_dataset[group_column]).astype(str).value_counts(normalize=True).to_dict()
    majority = max(per_group_sampled, key=lambda g: shares.get(g, 0.0), default=None)
    minority = min(per_group_sampled, key=lambda g: shares.get(g, 0.0), default=None)
    return {
        "per_group_prompts": dict(sorted(Counter(map(str, groups)).items())),
        "train_shares": dict(sorted(shares.items())),
        "reward_sampled": _mean(sampled_reward),
        "reward_greedy": _mean(greedy_reward),
        "per_group_sampled": per_group_sampled,
        "per_group_greedy": per_group_greedy,
        "per_group_nonfinite_sampled": group_nonfinite(sampled_groups, sampled_reward),
        "per_group_nonfinite_greedy": group_nonfinite(groups, greedy_reward),
        "worst_group_sampled": _min(per_group_sampled.values()),
        "worst_group_greedy": _min(per_group_greedy.values()),
        "majority_minus_minority_sampled": per_group_sampled[majority] - per_group_sampled[minority]
        if majority is not None
        else math.nan,
    }


def _mean(values: list[float]) -> float:
    """Mean of the finite values; NaN when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _min(values: Iterable[float]) -> float:
    """Smallest finite value; NaN when none is finite."""
    return min((v for v in values if math.isfinite(v)), default=math.nan)
