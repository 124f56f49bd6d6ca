"""What a ``pgrpo`` subcommand is, and how one is parsed and run; the command line (``pgrpo.cli``) lists them.

The domain modules (tasks, groups, experiments) each define their ``Command`` here, with no import of the CLI,
so the CLI sits on top of them.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Command:
    """One subcommand: dataclasses of options parsed by ``TrlParser``, then ``run(*parsed) -> exit code``.

    defaults:   called at parse time for parser defaults that differ from the dataclasses' own.
    positional: fields that may also be given as leading bare arguments (``pgrpo report DIR`` = ``--bench_dir DIR``).
    """

    arguments: tuple[type, ...]
    run: Callable[..., int]
    defaults: Callable[[], dict[str, Any]] | None = None
    positional: tuple[str, ...] = ()


def leading_positionals_as_flags(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """``["a", "b", "--x", "1"]`` with names ``("p", "q")`` -> ``["--p", "a", "--q", "b", "--x", "1"]``."""
    argv = list(argv)
    flags: list[str] = []
    for name in names:
        if not argv or argv[0].startswith("-"):
            break
        flags += [f"--{name}", argv.pop(0)]
    return flags + argv


def declaring_class(dtype: type, name: str) -> type:
    """The class in ``dtype``'s MRO that declares the field ``name`` (its own annotations hold it); for a private
    class (TRL's ``_BaseConfig``), the public class that derives from it (``GRPOConfig``)."""
    public = dtype
    for owner in dtype.__mro__:
        public = public if owner.__name__.startswith("_") else owner
        if name in inspect.get_annotations(owner):
            return public
    raise ValueError(f"{dtype.__name__} has no field {name!r}")


def help_sections(dataclasses: Sequence[type]) -> dict[str, str]:
    """{option dest: its --help section}: one section per class that declares options, titled ``Class (package)``,
    pgrpo's first, then from the most derived class to its bases (TRL's ModelConfig before GRPOConfig before
    transformers' TrainingArguments), so that a command's own options are not buried under the ones it inherits."""
    owners = {f.name: (declaring_class(d, f.name), d.__mro__) for d in dataclasses for f in fields(d) if f.init}
    package = {owner: owner.__module__.split(".")[0] for owner, _ in owners.values()}
    order = sorted(
        dict.fromkeys(o for o, _ in owners.values()), key=lambda o: (package[o] != "pgrpo", depth(o, owners))
    )
    titles = {owner: f"{owner.__name__} ({package[owner]})" for owner in order}
    return {
        name: titles[owner] for name, (owner, _) in sorted(owners.items(), key=lambda item: order.index(item[1][0]))
    }


def depth(owner: type, owners: dict[str, tuple[type, tuple[type, ...]]]) -> int:
    """How far up the MRO of the dataclass it serves ``owner`` lies (0: the dataclass itself)."""
    return min(mro.index(owner) for o, mro in owners.values() if o is owner)


def grouped_help(parser: argparse.ArgumentParser, sections: dict[str, str]) -> str:
    """``parser``'s help with its options in ``sections`` (in their order), the others (``--help``) first, and a
    one-line usage, through argparse's own formatter."""
    formatter = parser._get_formatter()
    formatter.add_usage(parser.usage, [], [])
    formatter.add_text(parser.description)
    grouped: dict[str, list[argparse.Action]] = {"options": []} | {title: [] for title in sections.values()}
    for action in parser._actions:
        grouped[sections.get(action.dest, "options")].append(action)
    for title, actions in grouped.items():
        formatter.start_section(title)
        formatter.add_arguments(actions)
        formatter.end_section()
    return formatter.format_help()


def run_command(name: str, command: Command, argv: Sequence[str]) -> int:
    """Parse ``argv`` into the command's dataclasses (``--help`` exits here) and run it."""
    from trl import TrlParser

    class Parser(TrlParser):  # TRL's parser; its --help in sections, the command's own options first
        def format_help(self) -> str:
            return grouped_help(self, help_sections(command.arguments))

    usage = f"pgrpo {name} [--config FILE.yaml] [--OPTION VALUE ...]"
    parser = Parser(command.arguments, prog=f"pgrpo {name}", usage=usage)
    if command.defaults is not None:
        parser.set_defaults(**command.defaults())
    parsed = parser.parse_args_and_config(leading_positionals_as_flags(argv, command.positional))
    return command.run(*parsed)
