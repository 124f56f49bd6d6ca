"""What a ``pgrpo`` subcommand is, and how one is parsed and run; the command line (``pgrpo.cli``) lists them.

The domain modules (tasks, groups, experiments) each define their ``Command`` here, with no import of the CLI,
so the CLI sits on top of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def run_command(name: str, command: Command, argv: Sequence[str]) -> int:
    """Parse ``argv`` into the command's dataclasses (``--help`` exits here) and run it."""
    from trl import TrlParser

    parser = TrlParser(command.arguments, prog=f"pgrpo {name}")
    if command.defaults is not None:
        parser.set_defaults(**command.defaults())
    parsed = parser.parse_args_and_config(leading_positionals_as_flags(argv, command.positional))
    return command.run(*parsed)
