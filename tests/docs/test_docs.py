"""The documentation's Python examples run as written (each document's ```python blocks, in order, in one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ["README.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.MULTILINE | re.DOTALL)


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS)
def test_python_examples_run_as_written(document: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(REPO / document)
    assert blocks, f"{document} has no python example"
    monkeypatch.chdir(tmp_path)  # examples write to relative paths such as out/
    namespace: dict = {"__name__": "__doc_example__"}
    for block in blocks:
        exec(compile(block, f"{document} example", "exec"), namespace)
    trainer = namespace.get("trainer")
    if trainer is not None:  # an example that trains must have trained
        assert trainer.state.global_step == trainer.args.max_steps
