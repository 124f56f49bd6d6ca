"""docs/own_task.md runs as written: its files, Python blocks, entry point and every `pgrpo` command."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from pgrpo.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "own_task.md"
BLOCK = re.compile(r"^```(?P<language>\w+)(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)


def install_entry_points(pyproject: str, site: Path) -> None:
    """What `pip install .` leaves for importlib.metadata: a dist-info folder with the package's entry points."""
    groups = tomllib.loads(pyproject)["project"]["entry-points"]
    dist_info = site / "clothing_tasks-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: clothing-tasks\nVersion: 0.1\n")
    lines = [
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
        for group, points in groups.items()
    ]
    (dist_info / "entry_points.txt").write_text("\n".join(lines))


@pytest.mark.slow
def test_own_task_doc_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the module form finds clothing_task.py here, as `python -m` would
    namespace: dict = {}
    commands = []
    for block in BLOCK.finditer(DOC.read_text()):
        language, info, body = block["language"], block["info"].strip(), block["body"]
        if language == "python" and info.startswith("title="):
            (tmp_path / json.loads(info.removeprefix("title="))).write_text(body)
        elif language == "python":
            exec(compile(body, str(DOC), "exec"), namespace)
        elif language == "toml":
            install_entry_points(body, tmp_path)
        elif language == "bash":
            for line in body.splitlines():
                argv = shlex.split(line, comments=True)
                assert argv[:1] == ["pgrpo"], f"only pgrpo commands can be shown in a bash block: {line}"
                commands.append(argv)
                assert main(argv[1:]) == 0
    printed = capsys.readouterr().out
    assert [argv[1] for argv in commands] == ["tasks", "train", "bench", "report", "tasks"]

    task = namespace["task"]  # Python: the task, its groups as the doc prints them, three P-GRPO steps
    assert task.group_column == "department" and len(task.sft_dataset) == 2000
    assert [(g.name, g.size) for g in (task.groups[0], task.groups[-1])] == [("Tops", 832), ("Trend", 6)]
    assert namespace["trainer"].state.global_step == 3
    assert any(k.startswith("group/Tops/") for entry in namespace["trainer"].state.log_history for k in entry)
    assert len(namespace["same_task"].train_dataset) + len(namespace["same_task"].eval_dataset) == 500
    assert (Path(namespace["untrained"]) / "config.json").is_file()
    low, high = task.reward_range
    rewards = task.reward_fn(completions=["this dress is lovely and flowy"] * 2, department=["Dresses", "Bottoms"])
    assert high >= rewards[0] > 0.5 > rewards[1] >= low  # the classifier reward depends on the group

    # CLI: the options table, one run, a bench with its report headed by the spec
    assert "clothing_task.py:build  [file]" in printed and "clothing  [entry point clothing_task:build]" in printed
    assert "num_reviews  2000  reviews sampled (seeded); each gives one prompt and one warm-start pair." in printed
    summary = json.loads((tmp_path / "runs/clothing/summary.json").read_text())
    assert summary["task"] == "clothing_task.py:build" and summary["steps"] == 5
    assert set(summary["eval"]["per_group_sampled"]) <= {g.name for g in task.groups}
    bench = tmp_path / "runs/clothing-bench"
    for variant in ("grpo", "pgrpo"):
        assert (bench / "runs/matrix/clothing_task.py-build" / variant / "seed0/summary.json").is_file()
    assert "## clothing_task.py:build" in (bench / "report.md").read_text()
    assert (bench / "curves_clothing_task.py-build.png").stat().st_size > 10_000

    # the bundled data as the doc describes it
    sizes = [len(namespace[name]) for name in ("reviews", "ratings", "movies", "users")]
    assert sizes == [23486, 100000, 1682, 943]
