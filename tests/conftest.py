"""Shared fixtures: a tokenizer built locally and a tiny Llama from a config (no downloads).

The whole session sees what a fresh machine sees: policies are built into an empty model cache
(``PGRPO_CACHE``, also inherited by the runs that tests launch as subprocesses), never read from
``~/.cache``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["PGRPO_CACHE"] = tempfile.mkdtemp(prefix="pgrpo-test-cache-")

import pytest

from pgrpo.testing import build_toy_model_dir

SESSION_CACHE = os.environ["PGRPO_CACHE"]


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Directory with a tiny Llama and its word-level tokenizer, loadable by path."""
    return build_toy_model_dir(tmp_path_factory.mktemp("toy_model"))
