"""Each distinct prompt of a batch through the model once, its key/value cache shared by the rows that repeat it.

GRPO batches every prompt ``num_generations`` times (B = P x G rows). A causal LM's states at the prompt positions
depend on the prompt alone, so the B x prompt_length positions that generation's prefill and the loss's forward push
through the body are P x prompt_length positions of work done G times. Here the distinct prompts run once, with
``use_cache``, and each row continues from its prompt's cache (``Cache.batch_select_indices``), which is
differentiable: the loss's gradient reaches the prompt positions through the cache, summed over the rows that share
them, as it is summed over those rows' copies without sharing.

Same positions (a forward without ``position_ids`` counts from the cache length; ``generate`` from the attention
mask), same masks, same arithmetic per row: the log-probabilities, their gradients and greedy completions equal the
unshared ones up to floating-point summation order (GEMMs of P instead of B rows). One thing changes where the model
has dropout in train mode (PEFT's ``lora_dropout``): rows that share a prompt share its dropout mask there.

With per-row group adapters (a ``router`` whose ``rows`` give each row's adapter), rows share a prompt's positions
only if they also share an adapter: the distinct rows are the distinct (prompt, adapter) pairs, and the prompt pass is
routed with those pairs' adapters (GRPO repeats a prompt with its group, so the G-fold saving stays).

    first, inverse = distinct_rows(prompt_ids, prompt_mask)   # prompt_ids[first][inverse] == prompt_ids
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import torch


def distinct_rows(*columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first row of each distinct row of ``columns`` (side by side), and each row's distinct index.

    Args:
        columns: (B, *) tensors with the same number of rows.
    Returns:
        first: (D,) long, the index of the first occurrence of each distinct row, in order of first occurrence.
        inverse: (B,) long, ``inverse[b]`` is the position in ``first`` of row ``b``'s distinct row.
    """
    key = torch.cat([column.reshape(len(column), -1) for column in columns], dim=1)
    _, sorted_inverse = torch.unique(key, dim=0, return_inverse=True)
    rows = torch.arange(len(key), device=key.device)
    firsts = torch.full((int(sorted_inverse.max()) + 1,), len(key), device=key.device)
    firsts = firsts.scatter_reduce(0, sorted_inverse, rows, reduce="amin")
    order = torch.argsort(firsts)  # distinct rows by first occurrence
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=key.device)
    return firsts[order], rank[sorted_inverse]


class RowRouting(Protocol):
    """Per-row routing of the forwards to come (:class:`pgrpo.models.adapters.GroupRouter`): ``rows`` (B,) or None."""

    rows: torch.Tensor | None

    def route(self, rows: torch.Tensor | None) -> AbstractContextManager: ...


# Cache layers that hold only keys and values per position, which batch_select_indices copies whole (transformers 5.x).
SHAREABLE_LAYERS = ("DynamicLayer", "DynamicSlidingWindowLayer")


def shared_cache(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix_length: int,
    counted_positions: bool,
    router: RowRouting | None = None,
) -> tuple[str, Any] | None:
    """The key/value cache of every row's first ``prefix_length`` positions, computed once per distinct prefix and
    copied to every row: the cache's keyword and the cache, or ``None`` when there is nothing to share (no prefix, no
    two rows alike) or the model gave no cache that rows can share (state-space or linear-attention layers, a cache
    turned off by activation checkpointing); the caller then makes the unshared call.

    Args:
        input_ids, attention_mask: (B, T); rows whose first ``prefix_length`` ids and mask agree share that prefix.
        counted_positions: give left-padded rows the positions ``generate`` gives them (counted along the attention
            mask) instead of a plain forward's ``0 .. prefix_length - 1``.
        router: per-row routing (group adapters); rows share a prefix only if their routed rows agree too, and the
            prefix pass is routed with the distinct rows' own.
    Only the last position's logits are computed (``logits_to_keep=1``). The keyword is ``cache`` on transformers
    releases that renamed ``past_key_values``.
    """
    if prefix_length < 1:
        return None
    routed = None if router is None else router.rows
    keys = [input_ids[:, :prefix_length], attention_mask[:, :prefix_length]]
    first, inverse = distinct_rows(*keys, *([] if routed is None else [routed.to(input_ids.device)]))
    if len(first) == len(input_ids):
        return None
    ids, mask = input_ids[first, :prefix_length], attention_mask[first, :prefix_length]
    options = {"position_ids": (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)} if counted_positions else {}
    with nullcontext() if routed is None else router.route(routed[first.to(routed.device)]):
        output = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1, **options)
    name = "cache" if output.get("cache") is not None else "past_key_values"
    cache = output.get(name)
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ not in SHAREABLE_LAYERS for layer in layers):
        return None
    if cache.get_seq_length() != prefix_length:
        return None
    cache.batch_select_indices(inverse)
    return name, cache


def shared_prefix_forward(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix_length: int,
    router: RowRouting | None = None,
    **kwargs: Any,
) -> Any:
    """``model(input_ids=..., attention_mask=..., **kwargs)`` with the first ``prefix_length`` positions shared.

    Args:
        input_ids, attention_mask: (B, T); rows whose first ``prefix_length`` ids and mask agree share that prefix.
        prefix_length: positions of the shared prefix (for GRPO's loss: the prompt length - 1, so that the last
            prompt position, which predicts the first completion token, is scored in the second call).
        router: per-row routing of both calls (group adapters), as in :func:`shared_cache`.
        kwargs: passed to the second call only, with its per-position tensors (``labels``) cut to positions
            ``prefix_length:``.
    Returns:
        The output of the call on positions ``prefix_length:`` (its per-position fields have T - prefix_length
        positions), or the plain call's output when no two rows share the prefix.
    """
    shared = shared_cache(model, input_ids, attention_mask, prefix_length, counted_positions=False, router=router)
    if shared is None:
        return model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    name, cache = shared
    rest = {k: v[:, prefix_length:] if k == "labels" else v for k, v in kwargs.items()}
    return model(input_ids=input_ids[:, prefix_length:], attention_mask=attention_mask, **{name: cache}, **rest)


# ``generate`` options that need neither a cache of their own nor several sequences per row: a shared prefill keeps
# their meaning (sampling, lengths, token ids, what is returned). Any other option gets the plain call.
PREFILL_SAFE_OPTIONS = frozenset({
    "generation_config", "max_new_tokens", "min_new_tokens", "max_length", "do_sample", "temperature", "top_p",
    "top_k", "min_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size", "pad_token_id", "eos_token_id",
    "bos_token_id", "return_dict_in_generate", "output_scores", "output_logits",
})  # fmt: skip


def can_share_prefill(model: Any, kwargs: dict[str, Any]) -> bool:
    """Whether ``model.generate(**kwargs)`` may start from a shared prompt cache: only options of
    ``PREFILL_SAFE_OPTIONS``, and neither its generation config nor ``kwargs['generation_config']`` turns the cache
    off, asks for another cache (static, offloaded) or for several sequences per row (beams, num_return_sequences)."""
    if set(kwargs) - PREFILL_SAFE_OPTIONS:
        return False
    configs = [c for c in (kwargs.get("generation_config"), getattr(model, "generation_config", None)) if c]
    return not any(
        config.use_cache is False
        or config.cache_implementation is not None
        or (config.num_beams or 1) > 1
        or (config.num_return_sequences or 1) > 1
        for config in configs
    )


def generate_with_shared_prefill(
    model: Any,
    generate: Callable[..., Any],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    router: RowRouting | None = None,
    **kwargs: Any,
) -> Any:
    """``generate(input_ids=..., attention_mask=..., **kwargs)``, each distinct prompt prefilled once.

    Every prompt position but the last is run for the distinct prompts only, at the positions ``generate`` gives
    left-padded rows (counted along the attention mask); ``generate`` then starts from that cache, copied to every
    row, with the last prompt position. ``generate`` is the model's own (or a wrapper of it); ``router``: per-row
    routing (group adapters), as in :func:`shared_cache`. Options a shared prefill cannot honour
    (:func:`can_share_prefill`) get the plain call.
    """
    if not can_share_prefill(model, kwargs):
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    prefix = input_ids.shape[1] - 1
    shared = shared_cache(model, input_ids, attention_mask, prefix, counted_positions=True, router=router)
    cache = {} if shared is None else dict([shared])
    return generate(input_ids=input_ids, attention_mask=attention_mask, **cache, **kwargs)
