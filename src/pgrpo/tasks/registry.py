"""Finding a task from its spec, reading its options, and building it; the ``pgrpo tasks`` command.

A task spec names a builder ``fn(seed: int = 0, **options) -> Task`` in one of four forms, tried in this order::

    personas                      registered with @register_task (the built-in tasks)
    clothing                      entry point in group "pgrpo.tasks" of an installed package
    my_tasks.clothing:build       a function of an importable module
    path/to/clothing.py:build     a function of a Python file (loaded once per process)

``build_task(spec, seed, **options)`` checks ``options`` against the builder's signature, then calls
``builder(seed=seed, **options)``. A task's options are the builder's parameters other than ``seed``. The first
line of the builder's docstring is the task's summary; an option's meaning comes from docstring lines of the form::

    name: meaning
    first, second: one meaning for both options, continued on lines
        indented deeper than the names

Google-style ``Args:`` sections (``name (type): meaning``) read the same way; a line whose names are not all
parameters of the builder is prose.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
import textwrap
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from pgrpo.command import Command
from pgrpo.tasks.base import TASKS, Task, TaskBuilder

ENTRY_POINT_GROUP = "pgrpo.tasks"
SPEC_FORMS = "package.module:function or path/to/file.py:function"
OPTION_LINE = re.compile(r"^(?P<indent>\s*)(?P<names>\w+(?:\s*,\s*\w+)*)(?:\s*\([^)]*\))?:(?:\s+(?P<text>.*))?$")


@dataclass(frozen=True)
class TaskOption:
    """One option of a task: a keyword parameter of its builder other than ``seed``."""

    name: str
    default: Any  # inspect.Parameter.empty when the option is required
    meaning: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def default_text(self) -> str:
        """The default as ``--task_options`` JSON writes it (``null``, ``true``, ``"cluster"``), else its repr."""
        if self.required:
            return "(required)"
        try:
            return json.dumps(self.default)
        except TypeError:
            return repr(self.default)


@dataclass(frozen=True)
class TaskSource:
    """A task builder found from ``spec``, where it came from (registered, entry point, module, file), its options."""

    spec: str
    builder: TaskBuilder
    origin: str
    options: tuple[TaskOption, ...]

    @property
    def summary(self) -> str:
        """The first line of the builder's docstring."""
        return (inspect.getdoc(self.builder) or "(no docstring)").splitlines()[0]

    def build(self, seed: int = 0, **options: Any) -> Task:
        """``builder(seed=seed, **options)`` once ``options`` are checked; the result must be a Task."""
        check_options(self, options)
        task = self.builder(seed=seed, **options)
        if not isinstance(task, Task):
            raise TypeError(
                f"Task builder {self.spec!r} returned {type(task).__name__}, not a pgrpo.tasks.Task; "
                "return one, e.g. from pgrpo.tasks.task_from_dataset(...)."
            )
        return task


def check_options(source: TaskSource, options: dict[str, Any]) -> None:
    """Raise a ValueError naming the fix if ``options`` has unknown keys or lacks a required option."""
    names = [option.name for option in source.options]
    valid = ", ".join(f"{option.name}={option.default_text()}" for option in source.options) or "none"
    unknown = [] if accepts_any_keyword(source.builder) else [name for name in options if name not in names]
    if unknown:
        guesses = {name: difflib.get_close_matches(name, names, 1) for name in unknown}
        problem = "Unknown option(s) " + ", ".join(
            repr(name) + (f" (did you mean {guess[0]!r}?)" if guess else "") for name, guess in guesses.items()
        )
    elif missing := [option.name for option in source.options if option.required and option.name not in options]:
        problem = f"Missing required option(s) {', '.join(map(repr, missing))}"
    else:
        return
    raise ValueError(
        f"{problem} for task {source.spec!r}. Its options (default): {valid}. "
        f"Give them as --task_options JSON; `pgrpo tasks --task {source.spec}` explains each."
    )


def accepts_any_keyword(builder: TaskBuilder) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values())


def task_source(spec: str, builder: Any, origin: str) -> TaskSource:
    """``builder`` as the TaskSource of ``spec``, once it is checked to be a function that takes ``seed``."""
    if not callable(builder):
        raise TypeError(f"Task {spec!r} is {builder!r}, not a function; name a task builder function.")
    if "seed" not in inspect.signature(builder).parameters and not accepts_any_keyword(builder):
        raise TypeError(f"Task builder {spec!r} must accept the keyword argument seed: def build(seed: int = 0, ...).")
    return TaskSource(spec, builder, origin, builder_options(builder))


def builder_options(builder: TaskBuilder) -> tuple[TaskOption, ...]:
    """The options of ``builder`` in signature order, with meanings from its docstring (module docstring)."""
    parameters = inspect.signature(builder).parameters
    meanings = option_meanings(inspect.getdoc(builder) or "", set(parameters))
    return tuple(
        TaskOption(name, parameter.default, meanings.get(name, ""))
        for name, parameter in parameters.items()
        if name != "seed" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    )


def option_meanings(docstring: str, parameters: set[str]) -> dict[str, str]:
    """{parameter: meaning} from ``name: meaning`` lines and their deeper-indented continuations (module docstring)."""
    meanings: dict[str, str] = {}
    current: list[str] = []  # the names that the lines being read describe
    indent = 0
    for line in docstring.splitlines():
        match = OPTION_LINE.match(line)
        names = [name.strip() for name in match["names"].split(",")] if match else []
        if names and set(names) <= parameters:
            current, indent = names, len(match["indent"])
            meanings.update(dict.fromkeys(names, (match["text"] or "").strip()))
        elif current and line.strip() and len(line) - len(line.lstrip()) > indent:
            meanings.update({name: f"{meanings[name]} {line.strip()}".strip() for name in current})
        else:
            current = []
    return meanings


def find_task(spec: str) -> TaskSource:
    """The builder that ``spec`` names (module docstring), or an error that says what is wrong and the fix."""
    if spec in TASKS:
        return task_source(spec, TASKS[spec], "registered")
    matches = entry_points(group=ENTRY_POINT_GROUP, name=spec)
    if len(matches) > 1:
        providers = ", ".join(f"{ep.dist.name if ep.dist else '?'} ({ep.value})" for ep in matches)
        raise ValueError(f"Several installed packages provide task {spec!r}: {providers}; uninstall all but one.")
    if matches:
        (entry_point,) = matches
        return task_source(spec, load_entry_point(entry_point), f"entry point {entry_point.value}")
    if ":" not in spec:
        hint = f" Name the builder function: {spec}:build." if spec.endswith(".py") else ""
        raise ValueError(
            f"Unknown task {spec!r}; choose one of {', '.join(task_names())} (`pgrpo tasks` lists them), "
            f"or give your own builder as {SPEC_FORMS}.{hint}"
        )
    location, function = spec.rsplit(":", 1)
    if location.endswith(".py"):
        module, origin = load_file(location, spec), "file"
    else:
        module, origin = import_task_module(location, spec), "module"
    if not hasattr(module, function):
        defined = [value for value in vars(module).values() if inspect.isfunction(value)]
        functions = [f.__name__ for f in defined if f.__module__ == module.__name__ and f.__name__[0] != "_"]
        raise ValueError(
            f"{location} has no {function!r} (task {spec!r}); its functions: {', '.join(functions) or 'none'}."
        )
    return task_source(spec, getattr(module, function), origin)


def load_entry_point(entry_point: EntryPoint) -> TaskBuilder:
    try:
        return entry_point.load()
    except Exception as error:
        distribution = entry_point.dist.name if entry_point.dist else "an installed package"
        raise ImportError(
            f"Task {entry_point.name!r} = {entry_point.value} (entry point of {distribution}) failed to load: {error}"
        ) from error


def import_task_module(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or not (name == error.name or name.startswith(error.name + ".")):
            raise  # the module exists but one of its own imports is missing
        raise ValueError(
            f"No module named {name!r} (task {spec!r}). Install its package, add its folder to PYTHONPATH "
            "(`python -m pgrpo` also finds modules in the current directory), or give the file: "
            f"path/to/{name.rsplit('.', 1)[-1]}.py:{spec.rsplit(':', 1)[1]}."
        ) from error


def load_file(location: str, spec: str) -> ModuleType:
    """The Python file at ``location`` as a module, executed once per process (a second load reuses it).

    Its folder goes first on ``sys.path`` (as ``python path/to/file.py`` puts it), so the file can import the modules
    beside it, at load time or later (a reward function that imports lazily).
    """
    path = Path(location).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"Task file {location} not found (task {spec!r}; relative to {Path.cwd()}).")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    name = f"pgrpo_task_file_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # before running it, as import does (dataclasses and pickle look it up)
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def task_names() -> list[str]:
    """Registered task names, then the entry-point names that no registered task shadows."""
    registered = sorted(TASKS)
    return registered + sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} - set(registered))


def build_task(spec: str, seed: int = 0, **options: Any) -> Task:
    """Build the task ``spec`` (any form of the module docstring) deterministically from ``seed``."""
    return find_task(spec).build(seed, **options)


def task_directory_name(spec: str) -> str:
    """A readable, file-system-safe directory name for ``spec``; a task name is its own.

    ``my_tasks.clothing:build`` -> ``my_tasks.clothing-build``; ``../data/clothing.py:build`` ->
    ``data_clothing.py-build``.
    """
    return re.sub(r"[^\w.-]+", "_", spec.replace(":", "-")).strip("._-") or "task"


def describe(source: TaskSource, width: int = 120) -> str:
    """The ``pgrpo tasks`` text of one task: spec, origin, summary, then each option's default and meaning."""
    lines = [f"{source.spec}  [{source.origin}]", f"  {source.summary}"]
    name_width = max((len(option.name) for option in source.options), default=0)
    default_width = max((len(option.default_text()) for option in source.options), default=0)
    for option in source.options:
        head = f"    {option.name:<{name_width}}  {option.default_text():<{default_width}}  "
        meaning = textwrap.wrap(option.meaning or "-", max(width - len(head), 40))
        lines.append(head + ("\n" + " " * len(head)).join(meaning))
    if not source.options:
        lines.append("    (no options)")
    return "\n".join(lines)


@dataclass
class TasksArguments:
    task: str = field(
        default="", metadata={"help": f"One task: a name, {SPEC_FORMS}. Empty: every registered and installed task."}
    )


def list_tasks(args: TasksArguments) -> int:
    """Print every task (or ``args.task``) with its options: JSON default and meaning."""
    sources = [find_task(args.task)] if args.task else [find_task(name) for name in task_names()]
    print("Options go in --task_options as JSON, e.g. '{\"name\": value}'; the task's seed is --task_seed.\n")
    print("\n\n".join(describe(source) for source in sources))
    return 0


LIST = Command(arguments=(TasksArguments,), run=list_tasks, positional=("task",))
