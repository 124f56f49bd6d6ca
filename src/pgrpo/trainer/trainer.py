"""``PGRPOTrainer``: TRL's ``GRPOTrainer`` with preference-group advantages.

TRL computes advantages inline in ``_generate_and_score_completions``. We wrap, never copy:

1. ``_calculate_rewards`` (called inside it) returns the rewards gathered from all processes;
   we keep them and gather the matching group labels with ``gather_object`` (same order).
2. ``_generate_and_score_completions`` runs TRL's method, computes the advantages of the
   whole global batch with the :class:`~pgrpo.core.AdvantageEngine` (updating the history
   once per generation batch, in training only, identically on every process), slices this
   process's part, and replaces ``out["advantages"]`` and TRL's logged advantages. TRL's own
   advantages, computed inline in its method, are replaced unused (why they are not skipped:
   ``OVERRIDDEN_TRL_METHODS``).
3. ``_save_checkpoint`` / ``_load_optimizer_and_scheduler`` save and restore the history
   with every checkpoint (``pgrpo_group_stats.json``).
4. Adapter group conditioning (``pgrpo.models.adapters``, ``pgrpo.trainer.adapters``): generation and the
   log-probability forwards of a batch are routed per row (``_generate_and_score_completions``,
   ``_get_per_token_logps_and_entropies`` chunk by chunk, ``_compute_loss`` from the per-row index TRL shuffles with
   the batch); ``save_model`` / ``_load_from_checkpoint`` write and read the shared weights as they would be without
   group adapters, plus every group's adapter.

Every overridden private TRL method, what it changes and the tests that pin it: :mod:`pgrpo.trainer.trl_surface`.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import trl
from accelerate.utils import gather_object
from transformers import PreTrainedModel
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from pgrpo.core import AdvantageEngine, RunningGroupRewards, group_metrics
from pgrpo.core.conditioning import PromptConditioning
from pgrpo.core.labels import GroupLabels, check_labels
from pgrpo.core.metrics import nonfinite_counts
from pgrpo.models.prefix import RowRouting
from pgrpo.trainer.adapters import ROWS_KEY, attach_group_adapters, routed_chunks
from pgrpo.trainer.config import PGRPOConfig
from pgrpo.trainer.cpu import CPUFastPath
from pgrpo.trainer.sampler import GroupBalancedSampler
from pgrpo.trainer.trl_surface import check_trl_version

logger = logging.getLogger(__name__)
STATS_FILE = "pgrpo_group_stats.json"

check_trl_version(trl.__version__)


def check_group_column(dataset: Any, group_column: str, name: str) -> None:
    """Clear errors for a dataset without the group column or with missing/empty/bad labels."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # an IterableDataset without known features: checked per batch instead
        return
    if group_column not in columns:
        close = difflib.get_close_matches(group_column, columns, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{name} has no preference-group column {group_column!r}; its columns are {columns}.{hint} "
            "Set PGRPOConfig(group_column=...) to the column that holds each prompt's group label."
        )
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        try:
            check_labels(dataset[group_column])
        except ValueError as error:
            raise ValueError(f"{name} column {group_column!r}: {error}") from None


class PGRPOTrainer(CPUFastPath, GRPOTrainer):
    """Drop-in ``GRPOTrainer`` whose advantages come from a preference-group history.

    Takes exactly ``GRPOTrainer``'s arguments, with ``args`` a :class:`PGRPOConfig`.
    ``self.advantage_engine`` holds the per-group statistics.
    """

    def __init__(self, model: Any, reward_funcs: Any = None, args: PGRPOConfig | None = None, **kwargs: Any) -> None:
        if not isinstance(args, PGRPOConfig):
            raise TypeError(f"PGRPOTrainer needs args=PGRPOConfig(...), got {type(args).__name__}.")
        conditioning = args.conditioning()
        for name in ("train_dataset", "eval_dataset"):
            datasets = kwargs.get(name)
            named = datasets.items() if isinstance(datasets, dict) else [(name, datasets)]
            for label, dataset in named:
                if dataset is not None:
                    check_group_column(dataset, args.group_column, label)
            if conditioning.prompt is not None and datasets is not None:
                kwargs[name] = (
                    {label: condition_prompts(d, conditioning.prompt, args.group_column) for label, d in named}
                    if isinstance(datasets, dict)
                    else condition_prompts(datasets, conditioning.prompt, args.group_column)
                )
        labels = labels_of(kwargs.get("train_dataset"), args.group_column)
        super().__init__(model, reward_funcs, args, **kwargs)
        if conditioning.prompt is not None and labels is not None:
            check_conditioning_is_read(getattr(self.processing_class, "tokenizer", self.processing_class),
                                       conditioning.prompt, labels)  # fmt: skip
        self.group_adapters = None
        if conditioning.adapters:
            self.group_adapters = attach_group_adapters(
                self.model, self.train_dataset, args.group_column, args.group_adapter_r, args.group_adapter_alpha
            )
        self.advantage_engine = AdvantageEngine(args.engine_options(), group_column=args.group_column)
        tied = getattr(self.model, "all_tied_weights_keys", None) if isinstance(self.model, PreTrainedModel) else None
        if tied and not self.model._keys_to_ignore_on_save:
            # Tied weights (e.g. lm_head = embed_tokens) are not saved; transformers' Trainer recognises them on resume
            # only through this attribute, and would otherwise warn that the checkpoint misses them.
            self.model._keys_to_ignore_on_save = set(tied)
        self._gathered_rewards = torch.empty(0, len(self.reward_funcs))
        self._gathered_groups: list[Any] = []
        self.running_rewards = RunningGroupRewards()  # training curves per group, carried across batches
        self.nonfinite_rewards: Counter = Counter()  # per group: training rewards left out (NaN, None, inf)

    # --------------------------------------------------------------- advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        column = self.args.group_column
        if inputs and column not in inputs[0]:  # checked first: a reward function may need the column too
            raise ValueError(
                f"Batch rows have no preference-group column {column!r} (they have {sorted(inputs[0])}); keep "
                "remove_unused_columns=False and give every row a group label."
            )
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards = rewards_per_func
        self._gathered_groups = gather_object([row[column] for row in inputs])
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        labels = [row.get(self.args.group_column) for row in inputs]  # a missing column fails in _calculate_rewards
        with self.group_adapters.route(labels) if self.group_adapters else nullcontext():
            output = super()._generate_and_score_completions(inputs)
        if self.group_adapters is not None:  # TRL shuffles and splits it with the batch, for the loss forward
            output[ROWS_KEY] = self.group_adapters.rows(labels, output["advantages"].device)
            self.group_adapters.require_grad()  # PEFT's reference forward (adapters disabled) freezes them
        mode = "train" if self.model.training else "eval"
        rewards_per_func = self._gathered_rewards
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan  # unscorable rows, as TRL does
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        prompt_index = torch.arange(len(rewards)) // num_generations
        groups = self._gathered_groups
        advantages = self.advantage_engine(rewards, prompt_index, groups, update=mode == "train")

        if self.args.estimator != "grpo" or self.args.group_weighting != "none":  # else TRL's own (same) advantages
            local = output["advantages"]
            start = self.accelerator.process_index * len(local)
            output["advantages"] = advantages[start : start + len(local)].to(local.device, local.dtype)
            logged = self._logs["advantages"]  # TRL's completions table: its advantages out, the trained ones in
            for _ in range(min(len(advantages), len(logged))):
                logged.pop()
            logged.extend(advantages.tolist())
        self._log_group_metrics(mode, rewards.double().cpu(), advantages, groups)
        if mode == "train":
            self._count_nonfinite(rewards.double().cpu(), groups)
        self._metrics[mode]["frac_zero_advantage"].append(zero_advantage_fraction(advantages, prompt_index))
        return output

    def _log_group_metrics(
        self, mode: str, rewards: torch.Tensor, advantages: torch.Tensor, groups: Sequence[Any]
    ) -> None:
        """Per-group reward, advantage and history statistics of this batch; in training, every group's running reward
        and the worst of them (:mod:`pgrpo.core.curves`)."""
        weights = self.advantage_engine.group_weights if self.args.group_weighting != "none" else None
        values = group_metrics(
            rewards,
            advantages,
            groups,
            self.advantage_engine.tracker,
            self.args.unbiased_history_std,
            weights,
            self.args.max_logged_groups,
        )
        if mode == "train":
            self.running_rewards.update(rewards, groups)
            values |= self.running_rewards.metrics(self.args.max_logged_groups)
        for name, value in values.items():
            self._metrics[mode][name].append(value)

    def _count_nonfinite(self, rewards: torch.Tensor, groups: Sequence[Any]) -> None:
        """Add this batch's non-finite rewards to ``self.nonfinite_rewards``; warn when a group first has some."""
        counts = nonfinite_counts(rewards, groups)
        if new := {label: n for label, n in counts.items() if label not in self.nonfinite_rewards}:
            total = Counter(groups)
            described = ", ".join(f"{label!r}: {n} of {total[label]}" for label, n in new.items())
            logger.warning(
                "The reward function(s) gave NaN, None or infinite rewards at step %d (per group: %s); they are left "
                "out of every statistic and get advantage 0. Each group's count per batch is logged as "
                "group/<label>/nonfinite_rewards, the run's total is trainer.nonfinite_rewards.",
                self.state.global_step + 1,
                described,
            )
        self.nonfinite_rewards.update(counts)

    # --------------------------------------------------------------- group adapters
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           **kwargs):  # fmt: skip
        logps = functools.partial(super()._get_per_token_logps_and_entropies, model)
        router = self.group_adapters.router if self.group_adapters else None
        if router is None or router.rows is None or not batch_size or batch_size >= len(input_ids):
            return logps(input_ids, attention_mask, logits_to_keep, batch_size, **kwargs)
        return routed_chunks(logps, router, input_ids, attention_mask, logits_to_keep, batch_size, **kwargs)

    def _prefix_router(self) -> RowRouting | None:
        # with group adapters, rows share a prompt's positions only within an adapter
        return self.group_adapters.router if self.group_adapters else None

    def _compute_loss(self, model, inputs):
        if self.group_adapters is None:
            return super()._compute_loss(model, inputs)
        router = self.group_adapters.router
        if not torch.is_grad_enabled():  # evaluation: no backward follows
            with router.route(inputs[ROWS_KEY]):
                return super()._compute_loss(model, inputs)
        router.set(inputs[ROWS_KEY])  # kept until training_step ends: activation checkpointing re-runs the forward
        return super()._compute_loss(model, inputs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            if self.group_adapters is not None:
                self.group_adapters.router.set(None)

    def save_model(self, output_dir=None, _internal_call=False):
        """The shared weights where ``Trainer`` puts them, plus every group's adapter under ``group_adapters/``."""
        if self.group_adapters is None:
            return super().save_model(output_dir, _internal_call)
        with self.group_adapters.detached():
            super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.group_adapters.save(Path(output_dir or self.args.output_dir))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if self.group_adapters is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        with self.group_adapters.detached():
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.group_adapters.load(Path(resume_from_checkpoint))
        self.group_adapters.require_grad()

    # --------------------------------------------------------------- sampling
    def _get_train_sampler(self, dataset=None):
        """TRL's sampler, or with ``group_sampling_alpha != 1`` the same layout over group-balanced draws."""
        dataset = self.train_dataset if dataset is None else dataset
        if self.args.group_sampling_alpha == 1.0:
            return super()._get_train_sampler(dataset)
        group_index = GroupLabels().encode(dataset[self.args.group_column])
        return GroupBalancedSampler(
            group_index,
            self.args.group_sampling_alpha,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            seed=self.args.seed,
        )

    # --------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model, trial):
        # Written before TRL's files, so that a checkpoint with a trainer_state.json always has its statistics.
        if self.args.should_save:
            checkpoint = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            save_group_stats(self.advantage_engine, checkpoint / STATS_FILE, self.args.group_sampling_alpha)
            generate_every = self.args.steps_per_generation * self.num_iterations
            if self._step % generate_every:
                logger.warning(
                    "Checkpoint %s falls inside a buffered generation batch (a new batch is generated every %d "
                    "micro-steps: steps_per_generation * num_iterations). Resuming from it regenerates that batch, "
                    "so the group statistics gain one batch that the uninterrupted run did not see. For an exact "
                    "resume, save at multiples of that period.",
                    checkpoint.name,
                    generate_every,
                )
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            load_group_stats(self.advantage_engine, Path(checkpoint) / STATS_FILE, self.args.group_sampling_alpha)


def labels_of(dataset: Any, group_column: str) -> list[Any] | None:
    """The group labels of a map-style dataset (None for another kind, e.g. a dict of datasets or a stream)."""
    if getattr(dataset, "column_names", None) is None or not hasattr(dataset, "__len__"):
        return None
    return list(dataset[group_column])


def check_conditioning_is_read(tokenizer: Any, conditioning: PromptConditioning, labels: list[Any]) -> None:
    """Refuse prompt conditioning whose texts ``tokenizer`` turns into the same tokens for two groups (words it does
    not know become one unknown token): every group would get the same prompt, and conditioning would do nothing."""
    seen: dict[tuple[int, ...], Any] = {}
    for label in dict.fromkeys(labels):
        ids = tuple(tokenizer(conditioning.text(label), add_special_tokens=False)["input_ids"])
        other = seen.setdefault(ids, label)
        if conditioning.text(other) != conditioning.text(label):
            raise ValueError(
                f"Prompt conditioning cannot tell groups {other!r} and {label!r} apart: the tokenizer reads both "
                f"{conditioning.text(other)!r} and {conditioning.text(label)!r} as {tokenizer.decode(list(ids))!r} "
                "(words it does not know). Build the tiny policy for this conditioning: policy_path(task, 'tiny', "
                "conditioning=args.conditioning()) (`pgrpo train` does), or use a model whose tokenizer knows "
                "the words."
            )


def condition_prompts(dataset: Any, conditioning: PromptConditioning, group_column: str) -> Any:
    """``dataset`` with every prompt conditioned on its row's group by ``conditioning``."""
    return dataset.map(lambda row: {"prompt": conditioning.apply(row["prompt"], row[group_column])})


def zero_advantage_fraction(advantages: torch.Tensor, prompt_index: torch.Tensor) -> float:
    """Share of prompts whose completions all get advantage 0: the prompts that give no policy gradient.

    Args:
        advantages: (N,) advantages of one generation batch.
        prompt_index: (N,) long, the prompt each completion answers.
    GRPO gives 0 exactly where a prompt's rewards are all equal (TRL's ``frac_reward_zero_std``); P-GRPO still gives
    such prompts a signal unless their reward equals the group's history mean.
    """
    nonzero = (advantages.abs() > 1e-8).double()
    per_prompt = torch.zeros(int(prompt_index.max()) + 1, dtype=torch.float64).index_add_(0, prompt_index, nonzero)
    return (per_prompt == 0).double().mean().item()


def save_group_stats(engine: AdvantageEngine, path: Path, sampling_alpha: float = 1.0) -> None:
    """Write the engine state and the prompt-sampling setting as JSON atomically (temporary file, then rename).

    The sampler itself needs no state: its draws follow from the seed and the epoch, which transformers restores.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps({**engine.state_dict(), "sampling": {"alpha": sampling_alpha}}))
    os.replace(temporary, path)


def load_group_stats(engine: AdvantageEngine, path: Path, sampling_alpha: float = 1.0) -> None:
    """Restore the engine state from ``path``; a missing or corrupt file, or another sampling alpha, is an error."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path.parent} has no P-GRPO group statistics ({path.name}); resuming without them would "
            "silently restart the reward history. Resume from a checkpoint written by PGRPOTrainer."
        )
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"P-GRPO group statistics file {path} is corrupt or truncated ({error}).") from error
    saved_alpha = state.get("sampling", {}).get("alpha", 1.0) if isinstance(state, dict) else 1.0
    if saved_alpha != sampling_alpha:
        raise ValueError(
            f"Cannot resume from {path}: it was trained with group_sampling_alpha={saved_alpha!r}, this run uses "
            f"{sampling_alpha!r}; resume with the same group_sampling_alpha or start a new run."
        )
    try:
        engine.load_state_dict(state)
    except KeyError as error:
        raise ValueError(f"P-GRPO group statistics file {path} is corrupt: it has no field {error}.") from error
    except (TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"P-GRPO group statistics file {path} is corrupt ({error}).") from error
    except ValueError as error:
        raise ValueError(f"Cannot resume from the P-GRPO group statistics in {path}: {error}") from error
