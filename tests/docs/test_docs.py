"""The documentation runs as written: every ```python block (in order, one namespace per document), files given
as ```python title="name.py", entry points given as ```toml, and every `pgrpo` line of a ```bash block."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from pgrpo.cli import main

DOCS = Path(__file__).resolve().parents[2]
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


def run_document(document: Path, directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list[list[str]]]:
    """Run ``document``'s blocks in ``directory``; returns the Python namespace and the `pgrpo` commands run."""
    monkeypatch.chdir(directory)  # examples write to relative paths such as out/ or runs/
    monkeypatch.syspath_prepend(str(directory))  # the module form finds a written task file here, as `python -m` would
    namespace: dict = {"__name__": "__doc_example__"}
    commands = []
    blocks = list(BLOCK.finditer(document.read_text()))
    assert blocks, f"{document} has no example"
    for block in blocks:
        language, info, body = block["language"], block["info"].strip(), block["body"]
        if language == "python" and info.startswith("title="):
            (directory / json.loads(info.removeprefix("title="))).write_text(body)
        elif language == "python":
            exec(compile(body, str(document), "exec"), namespace)
        elif language == "toml":
            install_entry_points(body, directory)
        elif language == "bash":
            for line in body.splitlines():
                argv = shlex.split(line, comments=True)
                assert argv[:1] == ["pgrpo"], f"only pgrpo commands can be shown in a bash block: {line}"
                commands.append(argv)
                assert main(argv[1:]) == 0, line
    return namespace, commands


@pytest.mark.slow
def test_readme_example_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace, _ = run_document(DOCS / "README.md", tmp_path, monkeypatch)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == trainer.args.max_steps == 2
    assert {"group/calm/reward_mean", "group/energetic/reward_mean"} <= set(trainer.state.log_history[0])
    assert (trainer.args.bf16, trainer.args.gradient_checkpointing) == (False, False)  # CPU defaults, no edits


@pytest.mark.slow
def test_own_task_doc_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    namespace, commands = run_document(DOCS / "docs" / "own_task.md", tmp_path, monkeypatch)
    printed = capsys.readouterr().out
    assert [argv[1] for argv in commands] == ["tasks", "train", "train", "bench", "report", "tasks"]

    task = namespace["task"]  # Python: the task, its groups as the doc prints them, three P-GRPO steps
    assert task.group_column == "department" and len(task.sft_dataset) == 2000
    assert [(g.name, g.size) for g in (task.groups[0], task.groups[-1])] == [("Tops", 832), ("Trend", 6)]
    assert namespace["trainer"].state.global_step == 3
    assert any(k.startswith("group/Tops/") for entry in namespace["trainer"].state.log_history for k in entry)
    assert len(namespace["same_task"].train_dataset) + len(namespace["same_task"].eval_dataset) == 500
    assert (Path(namespace["untrained"]) / "config.json").is_file()
    # conditioning from Python: the tiny tokenizer reads each department's text (the trainer refuses it otherwise)
    conditioned = namespace["conditioned"].conditioning().prompt
    assert conditioned.text("Tops") == "User group: shops for tops."
    assert conditioned.text("Trend") == "User group: Trend."  # a group without a description: its label
    tokenizer = AutoTokenizer.from_pretrained(namespace["conditioned_model"])
    assert tokenizer.tokenize(conditioned.text("Tops")) == ["user", "group", ":", "shops", "for", "tops", "."]
    low, high = task.reward_range
    rewards = task.reward_fn(completions=["this dress is lovely and flowy"] * 2, department=["Dresses", "Bottoms"])
    assert high >= rewards[0] > 0.5 > rewards[1] >= low  # the classifier reward depends on the group

    # CLI: the options table, one run, a bench with its report headed by the spec
    assert "clothing_task.py:build  [file]" in printed and "clothing  [entry point clothing_task:build]" in printed
    assert "num_reviews  2000  reviews sampled (seeded); each gives one prompt and one warm-start pair." in printed
    summary = json.loads((tmp_path / "runs/clothing/summary.json").read_text())
    assert summary["task"] == "clothing_task.py:build" and summary["steps"] == 5
    assert set(summary["eval"]["per_group_sampled"]) <= {g.name for g in task.groups}
    conditioned_run = yaml.safe_load((tmp_path / "runs/clothing-prompt/config.yaml").read_text())["trainer"]
    assert conditioned_run["group_descriptions"] == task.group_descriptions  # the task's own, from the CLI too
    bench = tmp_path / "runs/clothing-bench"
    for variant in ("grpo", "pgrpo"):
        assert (bench / "runs/matrix/clothing_task.py-build" / variant / "seed0/summary.json").is_file()
    assert "## clothing_task.py:build" in (bench / "report.md").read_text()
    assert (bench / "curves_clothing_task.py-build.png").stat().st_size > 10_000

    # the bundled data as the doc describes it
    sizes = [len(namespace[name]) for name in ("reviews", "ratings", "movies", "users")]
    assert sizes == [23486, 100000, 1682, 943]
