"""Text groups: MiniLM embeddings of clothing reviews recover their departments; cold start; exact reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from sklearn.metrics import normalized_mutual_info_score

from pgrpo.groups import GroupDiscovery, discover_groups
from pgrpo.groups.features import embed_texts

pytestmark = pytest.mark.slow  # embeds ~350 reviews with MiniLM: 10-30 s on 2 shared CPU cores

TEXT = "Review Text"
TRAIN_PER_DEPARTMENT = 40


@pytest.fixture(scope="module")
def splits(department_reviews: pd.DataFrame) -> tuple[Dataset, Dataset]:
    """(train: 40 reviews per department, held out: the other 15 per department) as datasets.Dataset."""
    first = department_reviews.groupby("Department Name").cumcount() < TRAIN_PER_DEPARTMENT
    return (
        Dataset.from_pandas(department_reviews[first], preserve_index=False),
        Dataset.from_pandas(department_reviews[~first], preserve_index=False),
    )


@pytest.fixture(scope="module")
def discovered(splits: tuple[Dataset, Dataset]) -> tuple[Dataset, Dataset, GroupDiscovery]:
    train, held_out = splits
    return discover_groups(train, held_out, TEXT, kind="text", num_groups=3, group_column="taste", seed=0)


def shuffled_nmi(truth: list[str], groups: list[int], permutations: int = 200) -> np.ndarray:
    """NMI of ``groups`` against ``permutations`` seeded shuffles of ``truth``: the no-structure baseline."""
    rng = np.random.default_rng(0)
    return np.array([normalized_mutual_info_score(rng.permutation(truth), groups) for _ in range(permutations)])


def test_embeddings_are_unit_norm_and_ignore_padding() -> None:
    texts = ["Runs small.", "This dress is gorgeous, the fabric drapes beautifully and the colour is true to photos."]
    together = embed_texts(texts)
    alone = np.concatenate([embed_texts([text]) for text in texts])
    assert together.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)
    # The short text is padded in the batch; pooling over the attention mask leaves its embedding unchanged.
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_text_groups_recover_review_departments_far_above_chance(
    discovered: tuple[Dataset, Dataset, GroupDiscovery],
) -> None:
    # Dresses, bottoms and jackets reviews talk about different garments. Measured over k-means seeds 0-3: NMI
    # 0.55-0.61 on the 120 training reviews and 0.61-0.73 on the 45 held out. Without structure (labels shuffled
    # 200 times) the largest NMI is ~0.06 on 120 rows and ~0.15 on 45: require 0.25 and 0.1 above every shuffle.
    train, held_out, discovery = discovered
    for split in (train, held_out):  # held-out reviews are cold-start rows: they never shaped the centroids
        nmi = normalized_mutual_info_score(split["Department Name"], split["taste"])
        assert nmi > 0.25 and nmi > shuffled_nmi(split["Department Name"], split["taste"]).max() + 0.1
    assert train["taste"] == discovery.train_groups.tolist()
    assert discovery.sizes == sorted(discovery.sizes, reverse=True) and sum(discovery.sizes) == len(train)


def test_cold_start_reviews_get_the_nearest_centroid(discovered: tuple[Dataset, Dataset, GroupDiscovery]) -> None:
    _, held_out, discovery = discovered
    embeddings = embed_texts(held_out[TEXT]).astype(np.float64)
    distances = ((embeddings[:, None, :] - discovery.centroids[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(held_out["taste"], distances.argmin(axis=1))


def test_reloaded_text_model_reproduces_the_fit_labels_exactly(
    department_reviews: pd.DataFrame, tmp_path: Path
) -> None:
    reviews = department_reviews.groupby("Department Name").head(8)
    discovery = GroupDiscovery(TEXT, kind="text", num_groups=3, group_column="taste").fit(reviews)
    loaded = GroupDiscovery.load(discovery.save(tmp_path / "model"))
    assert loaded.kind == "text" and loaded.group_column == "taste" and loaded.mean is None
    np.testing.assert_array_equal(loaded.assign(reviews), discovery.train_groups)
    assert loaded.representatives == discovery.representatives
    assert [row[TEXT] in set(reviews[TEXT]) for row in loaded.representatives] == [True] * 3


def test_missing_review_text_is_refused(department_reviews: pd.DataFrame) -> None:
    reviews = department_reviews.head(6).copy()
    reviews.loc[4, TEXT] = None
    with pytest.raises(ValueError, match=r"'Review Text' has 1 missing or non-text value.*row 4.*fillna"):
        GroupDiscovery(TEXT, kind="text", num_groups=2).fit(reviews)
