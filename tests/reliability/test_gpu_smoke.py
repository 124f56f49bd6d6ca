"""``scripts/gpu_smoke.py --cpu``: the GPU smoke script's checks, run on CPU with the toy model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.reliability.helpers import REPO


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_script_passes_on_cpu_and_prints_per_group_rewards(
    toy_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_script().main(["--cpu", "--model", toy_model_dir, "--output-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert len(steps) == 2 and all("reward" in line for line in steps)
    assert any("terse: reward" in line for line in steps) and any("verbose: reward" in line for line in steps)
    assert lines[-1].startswith("P-GRPO SMOKE OK: 2 steps") and "on cpu (vLLM off)" in lines[-1]


def test_smoke_script_exits_nonzero_on_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_script().main(["--cpu", "--model", str(tmp_path / "no-such-model")]) == 1
    assert "P-GRPO SMOKE FAILED" in capsys.readouterr().out
