"""Preference-group discovery for users with ids or profiles but no group labels: k-means, saved, with cold start.

Features of n rows (``pgrpo.groups.features``), then the space the clusters live in:

    text     one column embedded by all-MiniLM-L6-v2:  z = e(t) in R^384, unit norm (not rescaled)
    numeric  d columns, standardized with the training mean and population std:
             z = (x - mean) / scale,  scale_j = std_j (1 for a constant column; sklearn's StandardScaler)

Clustering: ``KMeans(k, n_init=10, random_state=seed)`` on the training z. With ``num_groups = 0`` k is the value in
2..max_groups with the highest silhouette score (Euclidean, on at most 5,000 rows drawn with the seed). Groups are
numbered by size, 0 the largest (ties keep k-means' order), and every row, seen in training or not (cold start),
gets the nearest centroid:

    group(x) = argmin_g || z(x) - c_g ||_2,      c: (k, d) centroids in z-space

Training rows are labelled by that same rule, so a saved and reloaded model reproduces the fit labels exactly
(same rows in the same order, on the same device; MiniLM embeddings of a text vary at the 1e-7 level with the batch
it is padded in, which can move a row lying on a boundary).

Model directory (no pickle): ``groups.json`` (settings, fit statistics, a representative training row per group)
and ``groups.safetensors`` (float64 ``centroids`` (k, d); for numeric also ``mean`` and ``scale`` (d,)).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from datasets import Dataset
from safetensors.numpy import load_file, save_file
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_argmin, silhouette_score
from sklearn.preprocessing import StandardScaler

from pgrpo.groups.features import (
    MINILM_DIMENSION,
    MINILM_MAX_TOKENS,
    MINILM_NAME,
    embed_texts,
    numeric_matrix,
    text_values,
)

KINDS = ("text", "numeric")
CONFIG_FILE = "groups.json"
ARRAYS_FILE = "groups.safetensors"
FORMAT = "pgrpo-groups"
FORMAT_VERSION = 1
SILHOUETTE_ROWS = 5000
KMEANS_RESTARTS = 10

Table = TypeVar("Table", Dataset, pd.DataFrame)


def feature_frame(data: Dataset | pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The ``columns`` of a ``datasets.Dataset`` or DataFrame as a DataFrame; ValueError naming missing ones."""
    available = list(data.column_names if isinstance(data, Dataset) else data.columns)
    missing = [column for column in columns if column not in available]
    if missing:
        raise ValueError(f"The data has no column(s) {missing}; it has {available}. Check the feature names.")
    if isinstance(data, Dataset):
        return data.select_columns(list(columns)).to_pandas()
    return data[list(columns)].reset_index(drop=True)


def check_model_dir(directory: str | Path, overwrite: bool) -> None:
    """FileExistsError if ``directory`` exists and holds files, unless ``overwrite``."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{directory} already exists and is not empty; choose a new model directory or pass overwrite=True "
            "(--overwrite true) to replace the group model in it."
        )


def with_groups(data: Table, groups: np.ndarray, column: str = "group", overwrite: bool = False) -> Table:
    """A copy of ``data`` (Dataset or DataFrame) with ``groups`` as int column ``column``.

    An existing column of that name is replaced only with ``overwrite=True``.
    """
    if len(groups) != len(data):
        raise ValueError(f"{len(groups)} group labels for {len(data)} rows; label the same data you pass.")
    existing = data.column_names if isinstance(data, Dataset) else data.columns
    if column in existing and not overwrite:
        raise ValueError(
            f"The data already has a column {column!r}; choose another group column or pass overwrite=True."
        )
    values = np.asarray(groups, dtype=np.int64)
    if isinstance(data, Dataset):
        kept = data.remove_columns(column) if column in existing else data
        return kept.add_column(column, values.tolist())
    return data.assign(**{column: values})


class GroupDiscovery:
    """Preference groups from text or numeric user features: ``fit``, ``assign`` (cold start), ``save``, ``load``.

    features:     column name(s): exactly one for ``kind="text"``, one or more for ``kind="numeric"``.
    num_groups:   k >= 2, or 0 to choose k in 2..max_groups by silhouette score.
    group_column: the column ``add_groups`` (and the CLI) writes.

    After ``fit`` (or ``load``): ``centroids`` (k, d) float64, ``mean``/``scale`` (d,) for numeric (None for text),
    ``sizes`` (rows per group in training), ``silhouette`` of the chosen k, ``silhouette_by_k`` (every k tried),
    ``representatives`` (per group, the feature values of the training row nearest its centroid). ``fit`` also
    sets ``train_groups``, the labels of the training rows (not saved).
    """

    def __init__(
        self,
        features: str | Sequence[str],
        kind: str = "text",
        num_groups: int = 0,
        *,
        max_groups: int = 8,
        group_column: str = "group",
        seed: int = 0,
    ) -> None:
        self.features = [features] if isinstance(features, str) else list(features)
        if kind not in KINDS:
            raise ValueError(f"Unknown kind {kind!r}; choose 'text' (one column of free text) or 'numeric'.")
        if not self.features:
            raise ValueError("Give at least one feature column.")
        if kind == "text" and len(self.features) != 1:
            raise ValueError(
                f"kind='text' embeds one column, got {self.features}; join them into one text column first."
            )
        if num_groups == 1 or num_groups < 0:
            raise ValueError(f"num_groups={num_groups}: give k >= 2, or 0 to choose k by silhouette score.")
        if max_groups < 2:
            raise ValueError(f"max_groups={max_groups}: the automatic choice needs max_groups >= 2.")
        self.kind = kind
        self.num_groups = num_groups
        self.max_groups = max_groups
        self.group_column = group_column
        self.seed = seed
        self.centroids: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.sizes: list[int] = []
        self.silhouette = float("nan")
        self.silhouette_by_k: dict[int, float] = {}
        self.representatives: list[dict[str, Any]] = []
        self.train_groups: np.ndarray | None = None

    # ----------------------------------------------------------------------------------------- features

    def raw_features(self, data: Dataset | pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """(the feature columns, their matrix before standardization) of ``data``."""
        frame = feature_frame(data, self.features)
        if self.kind == "text":
            return frame, embed_texts(text_values(frame, self.features[0])).astype(np.float64)
        return frame, numeric_matrix(frame, self.features)

    def standardize(self, matrix: np.ndarray) -> np.ndarray:
        """z-space rows: (x - mean) / scale for numeric features, the embeddings themselves for text."""
        return matrix if self.mean is None else (matrix - self.mean) / self.scale

    # ------------------------------------------------------------------------------------------- fit

    def fit(self, data: Dataset | pd.DataFrame) -> GroupDiscovery:
        """Cluster the rows of ``data``; sets the fitted state and ``train_groups``. Returns self."""
        frame, matrix = self.raw_features(data)
        rows = len(matrix)
        if self.kind == "numeric":
            scaler = StandardScaler().fit(matrix)
            self.mean, self.scale = scaler.mean_, scaler.scale_
        points = self.standardize(matrix)
        distinct = len(np.unique(points, axis=0))
        if self.num_groups > distinct:
            raise ValueError(
                f"num_groups={self.num_groups} but the data has only {rows} rows ({distinct} distinct feature rows); "
                "give fewer groups or more data."
            )
        if self.num_groups == 0 and distinct < 3:
            raise ValueError(
                f"Choosing the number of groups needs at least 3 distinct feature rows, the data has {distinct}; "
                "give num_groups or more data."
            )
        candidates = [self.num_groups] if self.num_groups else list(range(2, min(self.max_groups, distinct - 1) + 1))
        fits = {k: KMeans(k, n_init=KMEANS_RESTARTS, random_state=self.seed).fit(points) for k in candidates}
        sample = SILHOUETTE_ROWS if rows > SILHOUETTE_ROWS else None
        self.silhouette_by_k = {
            k: float(silhouette_score(points, model.labels_, sample_size=sample, random_state=self.seed))
            for k, model in fits.items()
        }
        best = max(candidates, key=self.silhouette_by_k.__getitem__)
        self.silhouette = self.silhouette_by_k[best]
        centers = fits[best].cluster_centers_
        counts = np.bincount(pairwise_distances_argmin(points, centers), minlength=best)
        self.centroids = centers[np.argsort(-counts, kind="stable")]
        self.train_groups = self.nearest(points)
        self.sizes = np.bincount(self.train_groups, minlength=best).tolist()
        values = frame if self.kind == "text" else pd.DataFrame(matrix, columns=self.features)
        self.representatives = [values.iloc[row].to_dict() for row in pairwise_distances_argmin(self.centroids, points)]
        return self

    # ---------------------------------------------------------------------------------------- assign

    def nearest(self, points: np.ndarray) -> np.ndarray:
        """int64 (n,): index of the nearest centroid of each z-space row."""
        return pairwise_distances_argmin(points, self.centroids).astype(np.int64)

    def assign(self, data: Dataset | pd.DataFrame) -> np.ndarray:
        """Group (int64, shape (n,)) of every row of ``data``, seen in training or not: its nearest centroid."""
        if self.centroids is None:
            raise ValueError("This GroupDiscovery is not fitted; call fit(data) or GroupDiscovery.load(directory).")
        return self.nearest(self.standardize(self.raw_features(data)[1]))

    def add_groups(self, data: Table, overwrite: bool = False) -> Table:
        """``data`` with its groups in ``group_column`` (see ``with_groups``)."""
        return with_groups(data, self.assign(data), self.group_column, overwrite)

    # ------------------------------------------------------------------------------------ save / load

    def config(self) -> dict[str, Any]:
        """Everything but the arrays, as written to ``groups.json``."""
        embedding = (
            {"model": MINILM_NAME, "pooling": "mean", "normalize": True, "max_tokens": MINILM_MAX_TOKENS}
            if self.kind == "text"
            else None
        )
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "features": self.features,
            "num_groups": self.num_groups,
            "max_groups": self.max_groups,
            "group_column": self.group_column,
            "seed": self.seed,
            "embedding": embedding,
            "fit": {
                "groups": len(self.sizes),
                "rows": int(sum(self.sizes)),
                "sizes": self.sizes,
                "silhouette": self.silhouette,
                "silhouette_by_k": {str(k): score for k, score in self.silhouette_by_k.items()},
                "representatives": self.representatives,
            },
        }

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write ``groups.json`` and ``groups.safetensors`` into ``directory`` (a non-empty one only with overwrite)."""
        if self.centroids is None:
            raise ValueError("Nothing to save: fit the GroupDiscovery first.")
        directory = Path(directory)
        check_model_dir(directory, overwrite)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"centroids": self.centroids}
        if self.mean is not None:
            arrays |= {"mean": self.mean, "scale": self.scale}
        save_file(arrays, directory / ARRAYS_FILE)
        temporary = directory / f".{CONFIG_FILE}.tmp"
        temporary.write_text(json.dumps(self.config(), indent=2, ensure_ascii=False) + "\n")
        os.replace(temporary, directory / CONFIG_FILE)  # written last: its presence marks a complete model
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> GroupDiscovery:
        """A fitted GroupDiscovery from a directory written by ``save``."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / ARRAYS_FILE).is_file():
            raise FileNotFoundError(
                f"{directory} is not a group model directory (needs {CONFIG_FILE} and {ARRAYS_FILE}); "
                "create one with `pgrpo groups fit` or GroupDiscovery.save."
            )
        config = json.loads((directory / CONFIG_FILE).read_text())
        if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory / CONFIG_FILE} is format {config.get('format')!r} version {config.get('version')!r}; "
                f"this pgrpo reads {FORMAT!r} version {FORMAT_VERSION}."
            )
        discovery = cls(
            config["features"],
            config["kind"],
            config["num_groups"],
            max_groups=config["max_groups"],
            group_column=config["group_column"],
            seed=config["seed"],
        )
        arrays = load_file(directory / ARRAYS_FILE)
        discovery.centroids = arrays["centroids"]
        discovery.mean, discovery.scale = arrays.get("mean"), arrays.get("scale")
        dimension = MINILM_DIMENSION if discovery.kind == "text" else len(discovery.features)
        if discovery.centroids.shape[1] != dimension or (discovery.kind == "numeric") != (discovery.mean is not None):
            raise ValueError(
                f"{directory / ARRAYS_FILE} does not match {directory / CONFIG_FILE} (centroids of shape "
                f"{discovery.centroids.shape} for {discovery.kind} features {discovery.features}); refit the model."
            )
        fit = config["fit"]
        discovery.sizes = fit["sizes"]
        discovery.silhouette = fit["silhouette"]
        discovery.silhouette_by_k = {int(k): score for k, score in fit["silhouette_by_k"].items()}
        discovery.representatives = fit["representatives"]
        return discovery


def discover_groups(
    train: Table,
    evaluation: Table,
    features: str | Sequence[str],
    kind: str = "text",
    num_groups: int = 0,
    group_column: str = "group",
    seed: int = 0,
) -> tuple[Table, Table, GroupDiscovery]:
    """Fit groups on ``train`` only and label both splits: (train + column, evaluation + column, the model).

    The evaluation rows are assigned as cold-start users (nearest centroid), so no evaluation data shapes the groups.
    """
    discovery = GroupDiscovery(features, kind, num_groups, group_column=group_column, seed=seed).fit(train)
    labelled_train = with_groups(train, discovery.train_groups, group_column)
    return labelled_train, discovery.add_groups(evaluation), discovery
