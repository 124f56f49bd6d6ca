"""Variants: a name for a set of ``pgrpo train`` flags, and each variant's random-label control.

    VARIANTS["pgrpo_ema"] = {"estimator": "pgrpo", "history": "ema", "history_decay": 0.99}

``<name>_random`` is the variant ``name`` with ``group_labels=random``: the same trainer on randomly
permuted group labels (group sizes kept, meaning lost: the paper's ablation), so ``pgrpo_random`` is
P-GRPO's control. Adding an entry to VARIANTS adds its control too; no entry's name ends in ``_random``.
"""

from __future__ import annotations

from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "frozen": {"estimator": "grpo", "learning_rate": 0.0},  # no update: the warm-started policy, what RL starts from
    # no update, told whom it serves: what prompt conditioning gives before any RL (the RL's share is measured from it)
    "frozen_prompt": {"estimator": "grpo", "learning_rate": 0.0, "group_conditioning": "prompt"},
    "grpo": {"estimator": "grpo"},
    "dr_grpo": {"estimator": "dr_grpo", "loss_type": "dr_grpo"},  # Dr. GRPO: its advantage and its loss
    "batch_std": {"estimator": "batch_std"},
    "rloo": {"estimator": "rloo"},
    "pgrpo": {"estimator": "pgrpo", "history": "cumulative"},
    "pgrpo_ema": {"estimator": "pgrpo", "history": "ema", "history_decay": 0.99},
    "pgrpo_window": {"estimator": "pgrpo", "history": "window", "history_window": 256},
    "pgrpo_scale": {"estimator": "pgrpo_scale"},
    # group-aware options (docs/method.md, "Group-aware options"), on GRPO's and on P-GRPO's advantages
    "grpo_balanced_sampling": {"estimator": "grpo", "group_sampling_alpha": 0.0},
    "grpo_balanced_loss": {"estimator": "grpo", "group_weighting": "balanced"},
    "grpo_worst_group": {"estimator": "grpo", "group_weighting": "worst_group"},
    "pgrpo_balanced_sampling": {"estimator": "pgrpo", "group_sampling_alpha": 0.0},
    "grpo_half_balanced_sampling": {"estimator": "grpo", "group_sampling_alpha": 0.5},
    "pgrpo_half_balanced_sampling": {"estimator": "pgrpo", "group_sampling_alpha": 0.5},
    "pgrpo_worst_group": {"estimator": "pgrpo", "group_weighting": "worst_group"},
    # group conditioning (docs/method.md, "Group conditioning"): the policy is told whom it serves
    "grpo_prompt": {"estimator": "grpo", "group_conditioning": "prompt"},
    "pgrpo_prompt": {"estimator": "pgrpo", "group_conditioning": "prompt"},
    "pgrpo_balanced_sampling_prompt": {
        "estimator": "pgrpo",
        "group_sampling_alpha": 0.0,
        "group_conditioning": "prompt",
    },
    "grpo_adapter": {"estimator": "grpo", "group_conditioning": "adapter"},
    "pgrpo_balanced_sampling_adapter": {
        "estimator": "pgrpo",
        "group_sampling_alpha": 0.0,
        "group_conditioning": "adapter",
    },
    # label quality: coarser (merged) and discovered (k-means of the prompt text) groups
    "pgrpo_merged": {"estimator": "pgrpo", "group_labels": "merged"},
    "pgrpo_discovered": {"estimator": "pgrpo", "group_labels": "discovered"},
    "grpo_balanced_sampling_merged": {"estimator": "grpo", "group_sampling_alpha": 0.0, "group_labels": "merged"},
    "grpo_balanced_sampling_discovered": {
        "estimator": "grpo",
        "group_sampling_alpha": 0.0,
        "group_labels": "discovered",
    },
}
RANDOM_SUFFIX = "_random"
RANDOM_LABELS = {"group_labels": "random"}
# The published bench: GRPO, P-GRPO, every group-aware option with its random-label control, and label quality.
GROUP_AWARE = ("grpo_balanced_sampling", "grpo_balanced_loss", "grpo_worst_group", "pgrpo_balanced_sampling",
               "pgrpo_worst_group", "grpo_half_balanced_sampling", "pgrpo_half_balanced_sampling")  # fmt: skip
DEFAULT_VARIANTS = (
    "frozen", "grpo", "pgrpo", "pgrpo" + RANDOM_SUFFIX, "pgrpo_ema",
    *(name for option in GROUP_AWARE for name in (option, option + RANDOM_SUFFIX)),
    "pgrpo_merged", "pgrpo_discovered", "grpo_balanced_sampling_merged", "grpo_balanced_sampling_discovered",
)  # fmt: skip


def variant_flags(name: str, strict: bool = True) -> dict[str, Any]:
    """The ``pgrpo train`` flags of the variant ``name`` (a VARIANTS entry or ``<entry>_random``); for a name VARIANTS
    does not hold, an error, or with ``strict=False`` no flags (a run directory of an older bench)."""
    if name in VARIANTS:
        return dict(VARIANTS[name])
    base = name.removesuffix(RANDOM_SUFFIX)
    if base != name and base in VARIANTS:
        return {**VARIANTS[base], **RANDOM_LABELS}
    if not strict:
        return {}
    raise ValueError(
        f"Unknown variant {name!r}; choose from {', '.join(VARIANTS)}, or <one of them>{RANDOM_SUFFIX} for the same "
        f"flags on randomly permuted group labels (variants are defined in VARIANTS of {__name__})."
    )


FROZEN_PREFIX = "frozen"  # frozen[_<conditioning>]: the initial policy, no update (learning rate 0)
REFERENCES = ("grpo", "frozen", "frozen_prompt")  # what options are measured against, never candidates themselves


def is_frozen(name: str) -> bool:
    """Whether ``name`` is an untrained reference (its evaluation does not depend on the number of steps)."""
    return name.split("_")[0] == FROZEN_PREFIX and variant_flags(name, strict=False).get("learning_rate") == 0.0


def frozen_reference(name: str) -> str:
    """The untrained reference of variant ``name``: the initial policy with the same prompt conditioning
    (``frozen_prompt`` for a variant that puts the group into its prompts, else ``frozen``). A variant's **RL share**
    is its held-out reward minus its reference's. Per-group adapters start as the identity (LoRA's B = 0), so an
    adapter variant's untrained reference is ``frozen`` itself."""
    from pgrpo.core.conditioning import uses_prompt

    conditioning = variant_flags(name, strict=False).get("group_conditioning", "none")
    return "frozen_prompt" if uses_prompt(conditioning) else "frozen"


def unconditioned(name: str) -> str | None:
    """The variant that trains as ``name`` does without telling the policy whom it serves: the VARIANTS entry with
    ``name``'s flags less ``group_conditioning`` (``pgrpo_balanced_sampling`` for ``pgrpo_balanced_sampling_prompt``,
    ``frozen`` for ``frozen_prompt``); None for a variant without conditioning or without such an entry. A variant's
    **conditioning share** is its held-out reward minus that variant's."""
    flags = variant_flags(name, strict=False)
    if flags.get("group_conditioning", "none") == "none":
        return None
    rest = {key: value for key, value in flags.items() if key != "group_conditioning"}
    return next((other for other, other_flags in VARIANTS.items() if other_flags == rest), None)


SPECIALIST_PREFIX = "specialist_"  # specialist_<group>: grpo on that group's train prompts alone (plan.py)
CONDITIONING = ("grpo_prompt", "pgrpo_balanced_sampling_prompt", "grpo_adapter", "pgrpo_balanced_sampling_adapter")
# The personalization bench: the references (untrained, with and without the group in the prompt, and grpo), the
# best option of the last bench, and every conditioning variant, each with its random-label control.
PERSONALIZATION_VARIANTS = (
    "frozen", "frozen_prompt", "grpo", "pgrpo", *(name for option in ("pgrpo_balanced_sampling", *CONDITIONING)
                       for name in (option, option + RANDOM_SUFFIX)),
)  # fmt: skip


def specialist_name(group: object) -> str:
    """The variant name of the specialist of ``group``."""
    return f"{SPECIALIST_PREFIX}{group}"


def is_specialist(name: str) -> bool:
    return name.startswith(SPECIALIST_PREFIX)


def is_random_control(name: str) -> bool:
    """Whether ``name`` is a variant's random-label control (``<variant>_random``)."""
    return name.endswith(RANDOM_SUFFIX)
