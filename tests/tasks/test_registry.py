"""Task specs: registered names, installed entry points, module:function and file.py:function; options; naming."""

from __future__ import annotations

import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgrpo.cli import main
from pgrpo.experiments.bench.plan import BenchArguments, planned_runs
from pgrpo.tasks import TASKS, build_task, find_task, task_from_dataset
from pgrpo.tasks import reviews as reviews_task
from pgrpo.tasks.registry import option_meanings, task_directory_name, task_names
from pgrpo.testing import toy_dataset, toy_reward

TOY_TASKS = '''
"""Toy task builders for the registry tests."""
from pgrpo.tasks import task_from_dataset
from pgrpo.testing import toy_dataset, toy_reward


def build(seed: int = 0, num_rows: int = 32, label: str = "toy", flag=None):
    """Two groups of toy prompts.

    num_rows: prompts in the dataset,
        split into train and eval.
    label:    the task's name.
    """
    return task_from_dataset(toy_dataset(num_rows), toy_reward, name=label, seed=seed)


def needs_path(seed: int = 0, *, path: str):
    return build(seed)


def not_a_task(seed: int = 0):
    return {"prompt": ["hi"]}


def no_seed(num_rows: int = 3):
    return build(0, num_rows)
'''


@pytest.fixture
def toy_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``toy_tasks.py`` importable as a module, and installed as the entry points "toy" and "personas" (shadowed).

    Installed as pip would: a ``*.dist-info`` folder with METADATA and entry_points.txt on ``sys.path``.
    """
    (tmp_path / "toy_tasks.py").write_text(TOY_TASKS)
    dist_info = tmp_path / "toy_tasks-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-tasks\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[pgrpo.tasks]\ntoy = toy_tasks:build\npersonas = toy_tasks:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "toy_tasks.py"
    for module in ("toy_tasks", "broken_tasks"):  # the next test's files are other files
        sys.modules.pop(module, None)


def test_every_spec_form_calls_its_builder_with_the_seed_and_options(toy_tasks: Path, monkeypatch) -> None:
    monkeypatch.setitem(TASKS, "toy_registered", find_task("toy_tasks:build").builder)
    expected = task_from_dataset(toy_dataset(40), toy_reward, seed=3)  # what build(seed=3, num_rows=40) returns
    specs = {
        "toy_registered": "registered",
        "toy": "entry point toy_tasks:build",
        "toy_tasks:build": "module",
        f"{toy_tasks}:build": "file",
    }
    for spec, origin in specs.items():
        assert find_task(spec).origin == origin
        task = build_task(spec, seed=3, num_rows=40, label=spec)
        assert task.name == spec
        assert task.train_dataset.to_dict() == expected.train_dataset.to_dict()
        assert task.eval_dataset.to_dict() == expected.eval_dataset.to_dict()
    other_seed = build_task("toy", seed=4, num_rows=40)
    assert other_seed.eval_dataset.to_dict() != expected.eval_dataset.to_dict()
    assert find_task(f"{toy_tasks}:build").builder is find_task(f"{toy_tasks}:build").builder  # the file loads once


def test_registered_names_win_over_entry_points(toy_tasks: Path) -> None:
    assert find_task("personas").builder is TASKS["personas"]
    assert task_names() == ["movielens", "personas", "reviews", "tones", "toy"]


def test_each_bad_spec_says_what_is_wrong(toy_tasks: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown task 'mytask'; choose one of movielens, personas, reviews, tones, "
                                         r"toy .*package\.module:function or path/to/file\.py:function"):  # fmt: skip
        find_task("mytask")
    with pytest.raises(ValueError, match=r"Name the builder function: my_task\.py:build"):
        find_task("my_task.py")
    with pytest.raises(ValueError, match=r"No module named 'no_such_tasks'.*PYTHONPATH.*no_such_tasks\.py:build"):
        find_task("no_such_tasks:build")
    with pytest.raises(FileNotFoundError, match=r"Task file missing/tasks\.py not found"):
        find_task("missing/tasks.py:build")
    with pytest.raises(ValueError, match=r"has no 'biuld'.*its functions: build, needs_path, not_a_task, no_seed"):
        find_task("toy_tasks:biuld")
    with pytest.raises(TypeError, match="must accept the keyword argument seed"):
        find_task("toy_tasks:no_seed")
    with pytest.raises(TypeError, match=r"returned dict, not a pgrpo\.tasks\.Task"):
        build_task("toy_tasks:not_a_task")
    (tmp_path / "broken_tasks.py").write_text("import not_installed_dependency\n")
    with pytest.raises(ModuleNotFoundError, match="not_installed_dependency"):  # the real cause, not "no module"
        find_task("broken_tasks:build")
    other = tmp_path / "other_tasks-0.1.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other-tasks\nVersion: 0.1\n")
    (other / "entry_points.txt").write_text("[pgrpo.tasks]\ntoy = toy_tasks:needs_path\nbroken = broken_tasks:build\n")
    with pytest.raises(ImportError, match=r"'broken' = broken_tasks:build \(entry point of other-tasks\) failed"):
        find_task("broken")
    with pytest.raises(ValueError, match=r"Several installed packages provide task 'toy': .*toy_tasks:needs_path"):
        find_task("toy")


def test_options_are_checked_against_the_builder_before_it_runs(toy_tasks: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown option\(s\) 'group_by' for task 'reviews'") as error:
        build_task("reviews", group_by="department")  # the clothing user's mistake
    options = [name for name in inspect.signature(reviews_task.build).parameters if name != "seed"]
    assert all(f"{name}=" in str(error.value) for name in options) and "n_train=2000" in str(error.value)
    with pytest.raises(ValueError, match=r"'num_trian' \(did you mean 'num_train'\?\)"):
        build_task("personas", num_trian=100)
    with pytest.raises(ValueError, match=r"task_options holds 'seed'; the task's seed is --task_seed"):
        main(["train", "--task", "personas", "--task_options", '{"seed": 2}'])
    with pytest.raises(ValueError, match=r"Missing required option\(s\) 'path'.*path=\(required\)"):
        build_task("toy_tasks:needs_path")


def test_option_meanings_read_both_docstring_styles() -> None:
    docstring = textwrap.dedent(
        """\
        Summary: not an option line, its names are not parameters.

        size:   rows per split,
                continued here.
        low, high: the reward range.
        Note: prose again.
            an indented line after prose belongs to nothing.

        Args:
            mode (str): "fast" or "slow".
            depth:
                on the next line.
        """
    )
    meanings = option_meanings(docstring, {"size", "low", "high", "mode", "depth", "unused"})
    assert meanings == {
        "size": "rows per split, continued here.",
        "low": "the reward range.",
        "high": "the reward range.",
        "mode": '"fast" or "slow".',
        "depth": "on the next line.",
    }


def test_tasks_command_lists_every_task_with_defaults_and_meanings(toy_tasks: Path, capsys) -> None:
    assert main(["tasks"]) == 0
    listing = capsys.readouterr().out
    for name in ("movielens  [registered]", "personas  [registered]", "reviews  [registered]"):
        assert name in listing
    assert "toy  [entry point toy_tasks:build]\n  Two groups of toy prompts." in listing
    assert "num_rows  32     prompts in the dataset, split into train and eval." in listing
    assert 'label     "toy"  the task\'s name.' in listing and "flag      null   -" in listing
    assert "describe_preferences  false  state each persona's genre and style in the prompt." in listing
    assert main(["tasks", f"{toy_tasks}:build"]) == 0
    one = capsys.readouterr().out
    assert f"{toy_tasks}:build  [file]" in one and "personas" not in one


def test_task_specs_become_readable_safe_directory_names() -> None:
    assert [task_directory_name(name) for name in ("personas", "movie-lens_2")] == ["personas", "movie-lens_2"]
    assert task_directory_name("my_tasks.clothing:build") == "my_tasks.clothing-build"
    assert task_directory_name("../data/clothing.py:build") == "data_clothing.py-build"
    assert task_directory_name("/home/me/my tasks/clothing.py:build") == "home_me_my_tasks_clothing.py-build"
    args = BenchArguments(out="bench", tasks=["personas", "pkg.tasks:build", "../t.py:build"], variants=["grpo"],
                          seeds=1, regimes=["none"], specialist_seeds=0)  # fmt: skip
    runs = planned_runs(args)
    assert [run.run_dir for run in runs] == [
        Path("bench/runs/matrix") / name / "grpo/seed0" for name in ("personas", "pkg.tasks-build", "t.py-build")
    ]
    assert [run.flags["task"] for run in runs] == ["personas", "pkg.tasks:build", "../t.py:build"]


def test_a_task_file_imports_the_modules_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the file's folder is added for this test only
    folder = tmp_path / "elsewhere"  # not the current directory, not on PYTHONPATH
    folder.mkdir()
    (folder / "reply_styles.py").write_text("STYLES = ['terse', 'casual']\n")
    (folder / "style_task.py").write_text(
        "from pgrpo.tasks import task_from_dataset\nfrom pgrpo.testing import toy_dataset, toy_reward\n\n"
        "def build(seed: int = 0):\n    import reply_styles  # imported late, as a reward function might\n\n"
        "    return task_from_dataset(toy_dataset(), toy_reward, name=reply_styles.STYLES[0], seed=seed)\n"
    )
    try:
        assert build_task(f"{folder / 'style_task.py'}:build").name == "terse"  # was: No module named 'reply_styles'
    finally:
        sys.modules.pop("reply_styles", None)
