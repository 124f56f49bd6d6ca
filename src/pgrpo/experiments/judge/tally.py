"""Counting verdicts: wins, ties and the win rate of run A, overall and per preference group."""

from __future__ import annotations

import math
from typing import Any

from pgrpo.experiments.judge.verdicts import VERDICTS


def tally(verdicts: list[str]) -> dict[str, Any]:
    """``{"n", "wins_a", "wins_b", "ties", "unparseable", "win_rate_a"}`` of verdicts 'a', 'b', 'tie', 'unparseable'.

    win_rate_a = (wins_a + (ties + unparseable) / 2) / n: 0.5 means no difference (NaN when n is 0).
    """
    unknown = set(verdicts) - set(VERDICTS)
    if unknown:
        raise ValueError(f"Unknown verdicts {sorted(unknown)}; a verdict is one of {', '.join(VERDICTS)}.")
    counts = {verdict: verdicts.count(verdict) for verdict in VERDICTS}
    n = len(verdicts)
    win_rate = (counts["a"] + 0.5 * (counts["tie"] + counts["unparseable"])) / n if n else math.nan
    return {
        "n": n,
        "wins_a": counts["a"],
        "wins_b": counts["b"],
        "ties": counts["tie"],
        "unparseable": counts["unparseable"],
        "win_rate_a": win_rate,
    }


def tally_by_group(groups: list[str], verdicts: list[str]) -> dict[str, Any]:
    """``{"per_group": {group: tally}, "overall": tally, "mean_group_win_rate_a"}`` (groups in sorted order)."""
    per_group = {
        group: tally([v for g, v in zip(groups, verdicts, strict=True) if g == group]) for group in sorted(set(groups))
    }
    rates = [counts["win_rate_a"] for counts in per_group.values()]
    return {
        "per_group": per_group,
        "overall": tally(verdicts),
        "mean_group_win_rate_a": sum(rates) / len(rates) if rates else math.nan,
    }
