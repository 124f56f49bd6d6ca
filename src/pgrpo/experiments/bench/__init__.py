"""``pgrpo demo``, ``pgrpo bench`` and ``pgrpo report``: the experiment matrix and what it shows.

A bench is a set of runs (task x variant x seed, plus regimes: other settings of a task, each with its own
variants), each a ``pgrpo train`` subprocess with its own run directory; ``report`` reads the finished run
directories and writes ``report.md``, ``results.json`` and figures. One concern per module:

    variants.py    VARIANTS: name -> `pgrpo train` flags; <name>_random = the same on permuted group labels
    regimes.py     REGIMES: (task, name, task options, trainer flags, variants)
    plan.py        BenchArguments -> the runs: directory and flags of each, every flag conflict an error
    execution.py   the runs as subprocesses, --jobs at a time; tiny policies built once beforehand
    statistics.py  run directories -> per-setting tables: 95% intervals over seeds, paired differences
    bar.py         the bar a variant must clear
    plots.py       figures
    report.py      report.md and results.json
    commands.py    the bench, report and demo commands
"""
