"""Regimes: settings of a task other than its defaults, each with the variants compared in it.

A regime is (task, name, task options, trainer flags, variants). ``pgrpo bench --regimes NAME ...`` runs the
chosen ones next to the task matrix with the same seeds, steps, prompts per step and held-out prompts; a
regime's ``num_generations`` replaces ``--num_generations`` (prompts per step stay, so completions per step
change with it). Each regime changes one factor from its task's defaults; for ``personas`` those are G=4, a
dense reward without noise, equal reward scales, shares 40/20/15/10/7/4/4% (two 4% minorities), SFT
preference 0.5 for every persona and prompts that name the persona.

    personas:G=2, personas:G=8         completions per prompt
    personas:minorities=2%, =25%       the two smallest personas' train share
    personas:majority-reward-x10       the majority's reward scaled by 10
    personas:reward-noise=0.2          Gaussian noise on every reward
    personas:binary                    reward 1[dense >= 0.75]
    personas:difficulty-gap            ravi and kemar warm-started with SFT preference 0 (others 0.5): they
                                       start behind and RL must find their genre and style
    personas:anonymous                 prompts do not name the persona: opposite wants, identical prompts
    personas:one-persona=1%            kemar at 1% of the train prompts (the others rescaled)
    personas:two-users-90-10           two users named in the prompt who want opposite things (eleanor:
                                       formal classical, 90%; kemar: humorous reggae, 10%), no other persona
    movielens:binary                   reward 1 for exactly one held-out title the user rated >= 4
    reviews:probability-reward         reward p(target rating) instead of the expected rating's closeness

The personalization regimes (anonymous, two-users) compare PERSONALIZATION_VARIANTS: the references, the best
option of the last bench and every group-conditioning variant, each with its random-label control; they are the
bench's default regimes. Every other regime compares LABEL_VARIANTS: grpo, pgrpo, pgrpo on random labels, and
the best group-aware option of
the published bench (P-GRPO with group-balanced sampling) with its random-label control, so that each regime
separates the effect of the labels from that of history normalisation. The difficulty-gap, anonymous and
one-persona regimes, built to ask when the labels matter, add group-balanced sampling on GRPO's advantages
and its control (EVIDENCE_VARIANTS). Add a regime by adding a ``Regime`` to REGIMES, a variant to a regime by
editing its ``variants``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgrpo.experiments.bench.variants import PERSONALIZATION_VARIANTS
from pgrpo.tasks.personas import shares_with
from pgrpo.tasks.registry import task_directory_name

LABEL_VARIANTS = ("grpo", "pgrpo", "pgrpo_random", "pgrpo_balanced_sampling", "pgrpo_balanced_sampling_random")
EVIDENCE_VARIANTS = (*LABEL_VARIANTS, "grpo_balanced_sampling", "grpo_balanced_sampling_random")


@dataclass(frozen=True)
class Regime:
    """A setting of ``task``: its ``task_options`` and ``pgrpo train`` ``flags``, compared across ``variants``."""

    task: str
    name: str
    task_options: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    variants: tuple[str, ...] = LABEL_VARIANTS

    @property
    def directory(self) -> str:
        """File-system-safe directory name: ``personas:G=2`` -> ``personas-G_2``."""
        return task_directory_name(self.name)


REGIMES: dict[str, Regime] = {
    regime.name: regime
    for regime in (
        Regime("personas", "personas:G=2", flags={"num_generations": 2}),
        Regime("personas", "personas:G=8", flags={"num_generations": 8}),
        Regime("personas", "personas:minorities=2%", {"shares": shares_with(ravi=0.02, kemar=0.02)}),
        Regime("personas", "personas:minorities=25%", {"shares": shares_with(ravi=0.25, kemar=0.25)}),
        Regime("personas", "personas:majority-reward-x10", {"reward_scale": [10.0, 1, 1, 1, 1, 1, 1]}),
        Regime("personas", "personas:reward-noise=0.2", {"reward_noise": 0.2}),
        Regime("personas", "personas:binary", {"binary": True}),
        Regime("personas", "personas:difficulty-gap", {"sft_preference": [0.5] * 5 + [0.0, 0.0]},
               variants=EVIDENCE_VARIANTS),
        Regime("personas", "personas:anonymous", {"anonymous": True}, variants=PERSONALIZATION_VARIANTS),
        Regime("personas", "personas:two-users-90-10", {"shares": [0.9, 0, 0, 0, 0, 0, 0.1]},
               variants=PERSONALIZATION_VARIANTS),
        Regime("personas", "personas:one-persona=1%", {"shares": shares_with(kemar=0.01)}, variants=EVIDENCE_VARIANTS),
        Regime("movielens", "movielens:binary", {"binary": True}),
        Regime("reviews", "reviews:probability-reward", {"score": "probability"}),
    )
}  # fmt: skip
PERSONALIZATION_REGIMES = ("personas:anonymous", "personas:two-users-90-10")
