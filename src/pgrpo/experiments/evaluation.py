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

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pgrpo.core.conditioning import GroupConditioning, Prompt
from pgrpo.models import encode_prompts, generate_completions, routed
from pgrpo.models.serving import policy_prompt
from pgrpo.tasks import Task


def score(task: Task, rows: list[dict[str, Any]], completions: list[str], prompts: list[Prompt]) -> list[float]:
    """Task rewards for ``completions``, row i answering ``rows[i]`` (every column reaches the reward) asked as
    ``prompts[i]`` (the prompt as the policy read it, as TRL passes it in training)."""
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
    rewards = task.reward_fn(prompts=prompts, completions=completions, **columns)
    return [math.nan if r is None else float(r) for r in rewards]


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
    through the model at once as TRL batches them, prompts left-padded to P tokens and completions right-padded to
    C, with the attention mask and each row's own positions (counted along the mask, so every real token sees
    exactly its unpadded context); the LM head runs on the last C + 1 positions only (``logits_to_keep``), the
    ones that predict completion tokens, and padded positions are left out of the sum.
    """
    encoded_prompts = encode_prompts(tokenizer, prompts, chat)
    encoded = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in completions]
    totals = []
    for begin in range(0, len(encoded), batch_size):
        prompt_ids, completion_ids = encoded_prompts[begin : begin + batch_size], encoded[begin : begin + batch_size]
        width, length = max(map(len, prompt_ids)), max(map(len, completion_ids))
        ids = torch.zeros(len(prompt_ids), width + length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
            ids[row, width - len(prompt) : width + len(completion)] = torch.tensor(prompt + completion)
            mask[row, width - len(prompt) : width + len(completion)] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with routed(model, groups, slice(begin, begin + batch_size)):
            output = model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=positions.to(model.device),
                logits_to_keep=length + 1,
            )
        logits = output.logits[:, :-1].float()  # (B, C, V): position width - 1 + t predicts completion token t
        targets = ids[:, width:, None].to(model.device)
        token_logp = torch.log_softmax(logits, -1).gather(2, targets)[..., 0].cpu()
        totals.append((token_logp * mask[:, width:]).sum(1))
    counts = [len(completion) for completion in encoded]
    return torch.cat(totals), torch.tensor(counts, dtype=torch.float64)


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    groups: list[Any] | None = None,
    batch_size: int = 16,
) -> float:
    """exp(mean token negative log-likelihood) of ``texts`` (text i routed through ``groups[i]``'s adapter), in
    right-padded batches of ``batch_size`` (padding after every real token: each keeps its unpadded context), texts
    of similar length batched together (less padding)."""
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    rows = [i for i, ids in enumerate(encoded) if len(ids) >= 2]  # a text of one token predicts nothing
    rows.sort(key=lambda i: len(encoded[i]))
    route = None if groups is None else [groups[i] for i in rows]
    nll, tokens = 0.0, 0
    for begin in range(0, len(rows), batch_size):
        batch = [encoded[i] for i in rows[begin : begin + batch_size]]
        ids = torch.zeros(len(batch), max(map(len, batch)), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, sequence in enumerate(batch):
            ids[row, : len(sequence)], mask[row, : len(sequence)] = torch.tensor(sequence), 1
        with routed(model, route, slice(begin, begin + batch_size)):
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[:, :-1]
        token_nll = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), ids[:, 1:].to(model.device), reduction="none"
        ).cpu()
        nll += float((token_nll * mask[:, 1:]).sum())
        tokens += int(mask[:, 1:].sum())
    return math.exp(nll / max(tokens, 1))


def reference_texts(rows: list[dict[str, Any]]) -> list[str]:
    """The rows' ``reference_text``, held-out real text; empty when the task gives none."""
    return [row["reference_text"] for row in rows] if rows and "reference_text" in rows[0] else []


# a policy's perplexity -> the same perplexity of its initial policy
INITIAL_PERPLEXITY_KEYS = {"perplexity_reference_text": "perplexity_reference_text_initial",
                           "perplexity": "perplexity_initial"}  # fmt: skip


def initial_policy_figures(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    policy_figures: dict[str, Any],
    texts: dict[str, list[str]],
    kl: Callable[[], float],
    cache: dict | None,
) -> dict[str, float]:
    """The initial policy's figures beside the policy's: ``kl()`` (KL(policy || initial) per token) and its
    perplexity on the texts (``texts[key]``) of each of the policy's perplexities in ``policy_figures``. A policy
    that was not updated (``reference is model``) is its own initial policy: KL 0, its own perplexities."""
    measured = [key for key in INITIAL_PERPLEXITY_KEYS if key in policy_figures]
    if reference is model:
        return {"kl_to_initial": 0.0, **{INITIAL_PERPLEXITY_KEYS[key]: policy_figures[key] for key in measured}}
    initial = {
        INITIAL_PERPLEXITY_KEYS[key]: cached_perplexity(reference, tokenizer, texts[key], cache) for key in measured
    }
    return {"kl_to_initial": kl(), **initial}


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
    conditioning: GroupConditioning | None = None,
    label_column: str | None = None,
    only_group: Any = None,
    greedy: bool = True,
    sampling: dict[str, Any] | None = None,
    reference_cache: dict[tuple[str, ...], float] | None = None,
    kl_samples: int = 0,
    prompt_perplexity: bool = True,
) -> dict[str, Any]:
    """Per-group held-out rewards and capability retention (see the module docstring).

    ``chat``: each prompt as a user message through the chat template. ``group_column``: the groups' column (default:
    the task's). ``conditioning``: the run's (``PGRPOConfig.conditioning()``): each prompt gets its row's
    ``label_column`` (default ``group_column``) group's text, the labels the policy was trained with, and with adapters
    each row is routed through that group's adapter; as served (:func:`pgrpo.models.serving.policy_prompt`).
    ``only_group``: evaluate only this group's rows among the ``num_prompts`` balanced ones (a specialist: the same
    prompts as a shared policy's evaluation gives that group). ``greedy``: also generate and score a greedy completion
    per prompt (``reward_greedy``, ...; a third of the generation at 2 samples). ``sampling``: the sampler's
    ``generate`` options; give training's (``sampling_options(config)``) so that the held-out samples come from the
    distribution RL trained, not transformers' default top-50 truncation of it. ``reference``: the initial policy, or
    ``model`` if not updated (:func:`initial_policy_figures`); ``reference_cache``: its perplexity per tuple of texts,
    kept by a caller evaluating many policies. ``kl_samples``: the KL on each prompt's first ``kl_samples`` samples (0:
    all). ``prompt_perplexity``: also the held-out prompts' perplexity (``reference_text`` is the better probe).
    """
    group_column = group_column or task.group_column
    conditioning = conditioning or GroupConditioning()  # none: every group asked alike
    was_training = model.training
    model.eval()
    rows = balanced_rows(task.eval_dataset.to_list(), group_column, num_prompts)
    if only_group is not None:
        rows = [row for row in rows if str(row[group_column]) == str(only_group)]
    groups = [row[group_column] for row in rows]
    labels = [row[label_column or group_column] for row in rows]
    prompts = [policy_prompt(row["prompt"], label, chat, conditioning) for row, label in zip(rows, labels, strict=True)]
    route = labels if conditioning.adapters else None
    torch.manual_seed(seed)
    greedy_texts = (
        generate_completions(model, tokenizer, prompts, max_new_tokens, chat=chat, groups=route) if greedy else None
    )
    sampled_rows = [row for row in rows for _ in range(samples)]
    sampled_prompts = [p for p in prompts for _ in range(samples)]
    sampled_route = route and [label for label in route for _ in range(samples)]
    sampled = generate_completions(
        model, tokenizer, sampled_prompts, max_new_tokens, True, chat=chat, groups=sampled_route, sampling=sampling
    )
    model_inputs = [as_model_input(tokenizer, prompt, chat) for prompt in prompts]
    greedy_reward = score(task, rows, greedy_texts, prompts) if greedy_texts is not None else None
    sampled_reward = score(task, sampled_rows, sampled, sampled_prompts)
    sampled_groups = [row[group_column] for row in sampled_rows]
    real_texts = reference_texts(rows)
    measure = functools.partial(policy_perplexity, model, reference, tokenizer, route=route, cache=reference_cache)
    results: dict[str, Any] = {
        "num_prompts": len(rows),
        **group_rewards(task, group_column, groups, greedy_reward, sampled_groups, sampled_reward),
        "samples_per_prompt": samples,
        **({"perplexity": measure(model_inputs)} if prompt_perplexity else {}),
        **({"perplexity_reference_text": measure(real_texts)} if real_texts else {}),
        "examples": examples(groups, model_inputs, sampled[::samples], greedy_texts),
    }
    if reference is not None:
        kept = [i for i in range(len(sampled)) if not kl_samples or i % samples < kl_samples]
        kl_rows = [sampled_prompts[i] for i in kept], [sampled[i] for i in kept], chat
        kl = functools.partial(kl_to_reference, model, reference, tokenizer, *kl_rows,
                               sampled_route and [sampled_route[i] for i in kept])  # fmt: skip
        texts = {"perplexity_reference_text": real_texts, "perplexity": model_inputs}
        results |= initial_policy_figures(model, reference, tokenizer, results, texts, kl, reference_cache)
    model.train(was_training)
    return results


def policy_perplexity(
    model: PreTrainedModel,
    reference: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    route: list[Any] | None,
    cache: dict | None,
) -> float:
    """:func:`perplexity` of the policy on ``texts`` (routed by ``route``). A policy that was not updated
    (``reference is model``) is its own initial policy: its figure is the initial policy's, taken from ``cache`` when
    a run before it in the process computed it (a zero-initialized LoRA adds exactly 0 to the base model's logits)."""
    if reference is model and route is None:
        return cached_perplexity(model, tokenizer, texts, cache)
    return perplexity(model, tokenizer, texts, route)


def cached_perplexity(
    reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], cache: dict | None
) -> float:
    """:func:`perplexity` of ``reference`` on ``texts``, looked up in (and stored into) ``cache`` when one is given."""
    if cache is None:
        return perplexity(reference, tokenizer, texts)
    if (key := tuple(texts)) not in cache:
        cache[key] = perplexity(reference, tokenizer, texts)
    return cache[key]


def kl_to_reference(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    completions: list[str],
    chat: bool,
    route: list[Any] | None,
) -> float:
    """Per-token KL(policy || reference) on the policy's own samples: mean over completions of
    (log pi(y | x) - log ref(y | x)) / |y| (``route``: each row's adapter group in the policy)."""
    policy_logp, lengths = sequence_logprobs(model, tokenizer, prompts, completions, chat, groups=route)
    reference_logp, _ = sequence_logprobs(reference, tokenizer, prompts, completions, chat)
    return ((policy_logp - reference_logp) / lengths).mean().item()


def examples(
    groups: list[Any], prompts: list[str], sampled: list[str], greedy: list[str] | None, per_group: int = 2
) -> list[dict[str, str]]:
    """The first ``per_group`` prompts of every group (as the model read them), each with its first sampled
    completion and, where generated, its greedy one: what the policy writes for each group, so hacking shows."""
    shown: Counter = Counter()
    picked = []
    for index, group in enumerate(groups):
        if shown[str(group)] < per_group:
            shown[str(group)] += 1
            picked.append({"group": str(group), "prompt": prompts[index], "sampled": sampled[index]})
            picked[-1] |= {"greedy": greedy[index]} if greedy is not None else {}
    return picked


def group_rewards(
    task: Task,
    group_column: str,
    groups: list[Any],
    greedy_reward: list[float] | None,
    sampled_groups: list[Any],
    sampled_reward: list[float],
) -> dict[str, Any]:
    """Held-out rewards overall and per group (sampled, and greedy unless ``greedy_reward`` is None), the worst
    group, the majority-minority gap, the groups' train shares (the weights of the train-mix reward) and each group's
    count of non-finite rewards.

    A group whose rewards are all non-finite has mean NaN and is left out of the worst group (NaN when no group has a
    finite mean), as in training's worst-group curve; ``per_group_nonfinite_*`` says how many were dropped.
    """
    per_group_sampled = group_means(sampled_groups, sampled_reward)
    shares = pd.Series(task.train_dataset[group_column]).astype(str).value_counts(normalize=True).to_dict()
    majority = max(per_group_sampled, key=lambda g: shares.get(g, 0.0), default=None)
    minority = min(per_group_sampled, key=lambda g: shares.get(g, 0.0), default=None)
    results = {
        "per_group_prompts": dict(sorted(Counter(map(str, groups)).items())),
        "train_shares": dict(sorted(shares.items())),
        "reward_sampled": _mean(sampled_reward),
        "per_group_sampled": per_group_sampled,
        "per_group_nonfinite_sampled": group_nonfinite(sampled_groups, sampled_reward),
        "worst_group_sampled": _min(per_group_sampled.values()),
        "majority_minus_minority_sampled": per_group_sampled[majority] - per_group_sampled[minority]
        if majority is not None
        else math.nan,
    }
    if greedy_reward is not None:
        per_group_greedy = group_means(groups, greedy_reward)
        results |= {
            "reward_greedy": _mean(greedy_reward),
            "per_group_greedy": per_group_greedy,
            "per_group_nonfinite_greedy": group_nonfinite(groups, greedy_reward),
            "worst_group_greedy": _min(per_group_greedy.values()),
        }
    return results


def _mean(values: list[float]) -> float:
    """Mean of the finite values; NaN when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _min(values: Iterable[float]) -> float:
    """Smallest finite value; NaN when none is finite."""
    return min((v for v in values if math.isfinite(v)), default=math.nan)
