"""Preference-group labels to indices: a stable mapping, part of the saved state.

Labels are non-empty ``str`` or ``int`` (``1`` and ``"1"`` are different groups; NumPy integers are
plain ints). Each new label gets the next index, 0, 1, 2, ... in order of first appearance.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

Label = str | int


def validate_label(label: Any) -> Label:
    """``label`` as a plain ``str`` or ``int``; ``TypeError``/``ValueError`` naming the fix otherwise."""
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (str, int, np.integer)):
        raise TypeError(
            f"Preference-group labels must be str or int, got {label!r} of type {type(label).__name__}; "
            "cast the group column to str or int."
        )
    if isinstance(label, str) and not label.strip():
        raise ValueError("Preference-group label is an empty string; give every prompt a non-empty group.")
    return int(label) if isinstance(label, np.integer) else label


class GroupLabels:
    """The label <-> index mapping of K preference groups.

    Args:
        labels: labels already known, in index order (e.g. from a saved state); all distinct.
    """

    def __init__(self, labels: Sequence[Label] = ()) -> None:
        self.labels: list[Label] = [validate_label(label) for label in labels]
        self._index = {label: i for i, label in enumerate(self.labels)}
        if len(self._index) != len(self.labels):
            raise ValueError(f"Preference-group labels must be distinct, got {list(labels)!r:.200}.")

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, labels: Sequence[Label] | np.ndarray | torch.Tensor, add: bool = True) -> torch.Tensor:
        """Map labels to indices, vectorized (one hash pass, a Python step per *distinct* label).

        Every label is checked before any is registered, so a call that raises changes nothing.

        Args:
            labels: (N,) labels, each a non-empty ``str`` or an ``int``.
            add: give unseen labels the next free indices (training); when False they map to -1 (evaluation).
        Returns:
            (N,) long tensor of group indices.
        """
        codes, uniques = factorize(labels)
        distinct = [validate_label(label) for label in uniques]
        lookup = [self._index.get(label, -1) for label in distinct]
        if add and -1 in lookup:
            for position, label in enumerate(distinct):
                if lookup[position] < 0:
                    lookup[position] = self._index[label] = len(self.labels)
                    self.labels.append(label)
        return torch.from_numpy(np.array(lookup, dtype=np.int64)[codes])


def factorize(labels: Sequence[Any] | np.ndarray | torch.Tensor) -> tuple[np.ndarray, list[Any]]:
    """(N,) codes into the list of distinct labels, in order of first appearance; each label keeps its Python type.

    Raises ``TypeError`` for nested, ragged or unhashable labels and ``ValueError`` for a missing one (None, NaN).
    """
    try:
        values = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if values.dtype.kind not in "iu":  # keep every label's own Python type (no str coercion of mixed lists)
            values = np.array(list(labels), dtype=object) if values.dtype.kind != "O" else values
        if values.ndim != 1:
            raise TypeError("nested labels")
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    except (TypeError, ValueError) as error:  # nested, ragged or unhashable labels (lists, dicts, ...)
        first = next(iter(labels), None)
        raise TypeError(
            f"Preference-group labels must be str or int, got {first!r} of type {type(first).__name__}; "
            "give every prompt one str or int group label."
        ) from error
    if (codes < 0).any():
        position = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(
            f"Preference-group label at position {position} is missing (None or NaN). Every prompt "
            "needs a group label: fill or drop those rows before training."
        )
    return codes, uniques.tolist()


def check_labels(labels: Sequence[Any], shown: int = 5) -> None:
    """Nothing when every label is a non-empty ``str`` or an ``int``; else one ``ValueError`` that names each kind of
    bad label (missing, empty string, another type) with how many rows have it and the first ``shown`` positions.

    One vectorized pass when the labels are valid (:func:`factorize`); the rows are searched only on failure.
    """
    try:
        for label in factorize(labels)[1]:
            validate_label(label)
        return
    except (TypeError, ValueError):
        pass
    rows: dict[str, list[int]] = defaultdict(list)
    examples: dict[str, Any] = {}
    for position, label in enumerate(labels):
        if (problem := label_problem(label)) is not None:
            rows[problem].append(position)
            examples.setdefault(problem, label)
    parts = []
    for problem, positions in rows.items():
        example = f" (e.g. {examples[problem]!r:.40})" if problem.startswith("of type") else ""
        first = "first " if len(positions) > shown else ""
        where = f"{first}row{'s' if len(positions) > 1 else ''} {', '.join(map(str, positions[:shown]))}"
        parts.append(f"{len(positions)} of {len(labels)} {problem}{example} at {where}")
    raise ValueError(
        f"Preference-group labels must be non-empty str or int: {'; '.join(parts)}. Fill or drop those rows "
        "(e.g. dataset.filter(...)), or cast the column to str or int."
    )


def label_problem(label: Any) -> str | None:
    """What is wrong with one label (``None`` when it is a valid one), worded to follow "N of M"."""
    if label is None or (isinstance(label, (float, np.floating)) and math.isnan(label)):
        return "missing (None or NaN)"
    if isinstance(label, str):
        return None if label.strip() else "empty strings"
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        return f"of type {type(label).__name__}"
    return None
