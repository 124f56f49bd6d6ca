"""Shared fixtures: a tokenizer built locally and a tiny Llama from a config (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from pgrpo.testing import build_toy_model_dir


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Directory with a tiny Llama and its word-level tokenizer, loadable by path."""
    return build_toy_model_dir(tmp_path_factory.mktemp("toy_model"))
