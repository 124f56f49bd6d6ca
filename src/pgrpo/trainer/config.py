"""``PGRPOConfig``: TRL's ``GRPOConfig`` plus the P-GRPO options, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from accelerate.utils import parse_flag_from_env
from transformers import TrainingArguments
from transformers.integrations.deepspeed import unset_hf_deepspeed_config
from trl import GRPOConfig

from pgrpo.core import ESTIMATORS, HISTORY_KINDS, UPDATE_ORDERS, WEIGHTINGS, EngineOptions
from pgrpo.core.conditioning import CONDITIONINGS, DEFAULT_TEMPLATE, SETTINGS, GroupConditioning, read_descriptions
from pgrpo.core.sampling import validate_alpha

# The TrainingArguments field that turns activation recomputation on: transformers 5.23 renamed
# `gradient_checkpointing` to `activation_checkpointing` (the old name still works there, with a FutureWarning).
CHECKPOINTING_FIELD = (
    "activation_checkpointing"
    if "activation_checkpointing" in {f.name for f in fields(TrainingArguments)}
    else "gradient_checkpointing"
)


@dataclass
class PGRPOConfig(GRPOConfig):
    """Configuration for :class:`~pgrpo.trainer.PGRPOTrainer`.

    Every ``GRPOConfig`` field keeps its meaning, except that advantages come from
    ``estimator`` instead of ``scale_rewards`` (``grpo`` = ``scale_rewards="group"``,
    ``batch_std`` = ``"batch"``, ``dr_grpo`` = ``"none"``), so ``scale_rewards`` must stay at
    its default. The P-GRPO fields map one-to-one onto :class:`pgrpo.core.EngineOptions`.

    Device-appropriate defaults: ``bf16`` and ``gradient_checkpointing`` (TRL: both ``True``) are
    ``True`` only when a CUDA GPU is used (bf16 only if it supports bf16); on a CPU both are
    ``False`` (bf16 autocast and recomputation make small models 8-35x slower there). Values you set
    are kept.
    """

    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Recompute activations in the backward pass (default: True on a GPU, False on a CPU)."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision (default: True on a GPU that supports it, else False)."},
    )

    group_column: str = field(
        default="group",
        metadata={"help": "Dataset column holding each prompt's preference-group label (str or int)."},
    )
    estimator: str = field(
        default="pgrpo",
        metadata={"help": f"Advantage estimator: one of {', '.join(sorted(ESTIMATORS))}."},
    )
    history: str = field(
        default="cumulative",
        metadata={"help": f"Per-group reward history: one of {', '.join(HISTORY_KINDS)} (cumulative = the paper)."},
    )
    history_decay: float = field(default=0.99, metadata={"help": "Per-reward decay of the 'ema' history, in (0, 1)."})
    history_window: int = field(
        default=1024, metadata={"help": "Number of most recent rewards per group kept by the 'window' history."}
    )
    advantage_eps: float = field(
        default=1e-4, metadata={"help": "Added to the standard deviation before dividing (TRL uses 1e-4)."}
    )
    unbiased_history_std: bool = field(
        default=False, metadata={"help": "Use the sample (n-1) instead of the population (n) history variance."}
    )
    min_history_count: int = field(
        default=2,
        metadata={"help": "Rewards of history a group needs before P-GRPO uses it; below, fall back to GRPO."},
    )
    update_order: str = field(
        default="update_then_normalize",
        metadata={"help": f"When the batch enters the history: one of {', '.join(UPDATE_ORDERS)}."},
    )
    group_sampling_alpha: float = field(
        default=1.0,
        metadata={
            "help": "Group-balanced prompt sampling: p(group) proportional to share^alpha (1: the data as it is, "
            "0: every group equally often)."
        },
    )
    group_weighting: str = field(
        default="none",
        metadata={
            "help": f"Per-completion loss weights multiplying the advantages: one of {', '.join(WEIGHTINGS)} "
            "(balanced: every group in a batch gets the same total weight; worst_group: online Group-DRO weights)."
        },
    )
    group_weight_step: float = field(
        default=0.1, metadata={"help": "worst_group: step size on a group's standardized reward shortfall."}
    )
    group_weight_floor: float = field(
        default=0.2, metadata={"help": "worst_group: lowest weight of a group, in (0, 1] (before normalization)."}
    )
    group_weight_ceiling: float = field(
        default=5.0, metadata={"help": "worst_group: highest weight of a group, >= 1 (before normalization)."}
    )
    group_conditioning: str = field(
        default="none",
        metadata={
            "help": f"Tell the policy whom it serves: one of {', '.join(CONDITIONINGS)} (prompt: each group's "
            "description in its prompts, a system message for chat prompts; adapter: a LoRA adapter per group on the "
            "shared weights, each completion routed through its group's adapter)."
        },
    )
    group_prompt_template: str = field(
        default=DEFAULT_TEMPLATE,
        metadata={"help": "prompt conditioning: the text a group's prompts get, with {group} and/or {description}."},
    )
    group_prompt_role: str = field(
        default="system",
        metadata={
            "help": "prompt conditioning of chat prompts: where the group's text goes, 'system' (the system message) "
            "or 'user' (the start of the first user message; small instruct models follow it better there).",
            "choices": ["system", "user"],
        },
    )
    group_descriptions: dict | str | None = field(
        default=None,
        metadata={
            "help": "prompt conditioning: each group's description, as a JSON object or a .json/.yaml file "
            "({label: text}); a group without one is described by its label."
        },
    )
    group_adapter_r: int = field(
        default=8, metadata={"help": "adapter conditioning: LoRA rank of each group's adapter."}
    )
    group_adapter_alpha: int = field(
        default=16, metadata={"help": "adapter conditioning: LoRA alpha of each group's adapter."}
    )
    max_logged_groups: int = field(
        default=32,
        metadata={"help": "Log per-group metrics while a run has at most this many groups (0 disables them)."},
    )

    def __post_init__(self) -> None:
        self.resolve_device_defaults()
        super().__post_init__()
        if self.scale_rewards != "group":
            raise ValueError(
                f"PGRPOConfig takes advantages from `estimator`, not `scale_rewards` (got {self.scale_rewards!r}); "
                "leave scale_rewards at its default and set estimator='batch_std' (for 'batch') or "
                "estimator='dr_grpo' (for 'none')."
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "PGRPOTrainer normalizes the weighted sum of the reward functions; "
                "multi_objective_aggregation must be 'sum_then_normalize'."
            )
        if not self.group_column:
            raise ValueError("group_column must name the dataset column with the preference-group labels.")
        if self.remove_unused_columns:
            raise ValueError(
                f"remove_unused_columns=True would drop the preference-group column {self.group_column!r} before "
                "PGRPOTrainer sees it; leave remove_unused_columns=False (the GRPOConfig default)."
            )
        if self.max_logged_groups < 0:
            raise ValueError(f"max_logged_groups must be >= 0, got {self.max_logged_groups}.")
        validate_alpha(self.group_sampling_alpha)
        self.group_descriptions = read_descriptions(self.group_descriptions) or None
        if self.conditioning().adapters:  # decoding validates the conditioning, its template and role
            self.validate_adapter_options()
        self.engine_options()  # validates every engine option with a clear error

    def resolve_device_defaults(self) -> None:
        """Set ``bf16`` and activation checkpointing where left unset: on only for a CUDA GPU (bf16 if supported)."""
        gpu = torch.cuda.is_available() and not self.use_cpu
        if self.bf16 is None:
            self.bf16 = gpu and not self.fp16 and torch.cuda.is_bf16_supported()
        if self.gradient_checkpointing is None and getattr(self, CHECKPOINTING_FIELD) is None:
            setattr(self, CHECKPOINTING_FIELD, gpu)

    def validate_adapter_options(self) -> None:
        """Adapter conditioning: positive LoRA settings, generation in this process, parameters not sharded, DDP
        tolerating unused adapters."""
        if self.group_adapter_r < 1 or self.group_adapter_alpha <= 0:
            raise ValueError(
                f"group_adapter_r must be >= 1 and group_adapter_alpha > 0, got {self.group_adapter_r} and "
                f"{self.group_adapter_alpha}."
            )
        if self.use_vllm:
            raise ValueError(
                "group_conditioning='adapter' routes generation through each group's adapter inside this process; "
                "vLLM generates without them. Set use_vllm=False, or use group_conditioning='prompt'."
            )
        if (sharding := parameter_sharding(self)) is not None:
            if getattr(self, "deepspeed_plugin", None) is not None:
                unset_hf_deepspeed_config()  # transformers' process-wide ZeRO-3 switch, set by this config
            raise ValueError(
                f"group_conditioning='adapter' does not support {sharding}: it shards the parameters across "
                "processes, while the group adapters are saved from and loaded into each process's own copy without "
                "gathering them, so saved adapters would be partial or empty. Use DeepSpeed ZeRO-2 "
                "(configs/accelerate/deepspeed_zero2.yaml) or DDP (configs/accelerate/multi_gpu.yaml), which keep the "
                "full model on every process, or group_conditioning='prompt'."
            )
        if self.ddp_find_unused_parameters is None:  # a group absent from a process's batch leaves its adapter unused
            self.ddp_find_unused_parameters = True

    def conditioning(self) -> GroupConditioning:
        """How the policy is told whom it serves: the ``group_*`` settings decoded, as serving decodes a run's."""
        return GroupConditioning.from_settings({name: getattr(self, name) for name in SETTINGS})

    def engine_options(self) -> EngineOptions:
        """The advantage-engine options this config describes."""
        return EngineOptions(
            estimator=self.estimator,
            history=self.history,
            decay=self.history_decay,
            window=self.history_window,
            eps=self.advantage_eps,
            unbiased=self.unbiased_history_std,
            min_count=self.min_history_count,
            update_order=self.update_order,
            weighting=self.group_weighting,
            weight_step=self.group_weight_step,
            weight_floor=self.group_weight_floor,
            weight_ceiling=self.group_weight_ceiling,
        )


def parameter_sharding(args: TrainingArguments) -> str | None:
    """``"DeepSpeed ZeRO-3"`` or ``"FSDP"`` when the run shards the parameters across processes, else None.

    Read from the resolved arguments: ``deepspeed_plugin`` (a ``deepspeed`` JSON/dict, or accelerate's
    ``ACCELERATE_USE_DEEPSPEED`` with its zero stage), ``fsdp``, and accelerate's ``ACCELERATE_USE_FSDP`` (set by
    ``accelerate launch`` with an FSDP config, which ``TrainingArguments`` does not read).
    """
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is not None and plugin.zero_stage == 3:
        return "DeepSpeed ZeRO-3"
    if args.fsdp or parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return "FSDP"
    return None
