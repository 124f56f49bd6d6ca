"""Group adapters in training: attached to TRL's model for the training data's groups, and TRL's chunked
log-probability forward routed chunk by chunk. The adapters themselves (TRL-free): :mod:`pgrpo.models.adapters`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pgrpo.core.labels import GroupLabels
from pgrpo.models.adapters import GroupAdapters, GroupRouter

ROWS_KEY = "group_adapter_index"  # per-row adapter index (-1: shared weights) in TRL's batch dict


def attach_group_adapters(model: nn.Module, dataset: Any, group_column: str, r: int, alpha: int) -> GroupAdapters:
    """:class:`GroupAdapters` on ``model`` for every group label in ``dataset[group_column]`` (first-seen order)."""
    if not hasattr(dataset, "column_names") or not hasattr(dataset, "__getitem__"):
        raise ValueError(
            "group_conditioning='adapter' makes one adapter per group of the training data, so it needs a map-style "
            f"train_dataset (datasets.Dataset) with the group column, got {type(dataset).__name__}."
        )
    labels = GroupLabels()
    labels.encode(dataset[group_column])
    return GroupAdapters(model, labels.labels, r, alpha)


def routed_chunks(logps: Any, router: GroupRouter, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  logits_to_keep: int, batch_size: int, **kwargs: Any) -> tuple:  # fmt: skip
    """TRL's ``_get_per_token_logps_and_entropies`` (``logps``, bound) over ``batch_size``-row chunks, each routed with
    its own rows of ``router.rows``. Text-only: images would need per-chunk slicing of their tensors too."""
    flags = ("compute_entropy", "compute_aux_loss")
    if images := sorted(key for key, value in kwargs.items() if key not in flags and value is not None):
        raise NotImplementedError(f"group_conditioning='adapter' supports text-only models; this batch has {images}.")
    rows, parts = router.rows, []
    for start in range(0, len(input_ids), batch_size):
        with router.route(rows[start : start + batch_size]):
            chunk = slice(start, start + batch_size)
            parts.append(logps(input_ids[chunk], attention_mask[chunk], logits_to_keep, **kwargs))
    per_token, entropies, aux = zip(*parts, strict=True)
    return (
        torch.cat(per_token),
        None if entropies[0] is None else torch.cat(entropies),
        None if aux[0] is None else torch.stack(aux).mean(),
    )
