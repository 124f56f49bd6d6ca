"""Serving a trained policy: the model and the conditioning that answer a group's users, as training conditioned them.

    served = serve("runs/personas-grpo-prompt-s0", group="kemar")
    answers = served.answer(["Any music for a party?"])

A run directory (``pgrpo train``: config.yaml + final/) states its conditioning in config.yaml's trainer section,
decoded by :meth:`~pgrpo.core.conditioning.GroupConditioning.from_settings` as ``PGRPOConfig`` decodes it in
training. A model folder (a run's final/, or any ``PGRPOTrainer.save_model`` output) is served with the conditioning
given, by default its group adapters if it has them and no text. For one group, that group's adapter is merged into
the shared weights (a plain ``transformers`` model); for every group at once (``group=None``), all adapters are loaded
and each row is routed through its own. Each prompt is given as in training: a user message for a model with a chat
template, with its group's text where the run puts one. No TRL import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from pgrpo.core.conditioning import GroupConditioning, Prompt
from pgrpo.models import generate_completions, load_tokenizer
from pgrpo.models.adapters import ADAPTERS_DIR, INDEX_FILE, GroupAdapters, read_index

logger = logging.getLogger(__name__)
RUN_CONFIG = "config.yaml"  # a run directory's settings (pgrpo.experiments.runs)
FINAL_DIR = "final"  # a run directory's trained policy


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A finished run directory's config.yaml, refusing a directory that is not a run or has not finished."""
    if not (run_dir / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a pgrpo run directory (no {RUN_CONFIG}); pass a `pgrpo train` run.")
    if not (run_dir / FINAL_DIR).is_dir():
        raise FileNotFoundError(f"{run_dir} has no {FINAL_DIR}/ policy: the run has not finished training; resume it.")
    return yaml.safe_load((run_dir / RUN_CONFIG).read_text())


def policy_prompt(prompt: str, label: Any, chat: bool, conditioning: GroupConditioning) -> Prompt:
    """A task prompt as the policy is given it in training: a user message for chat models, then conditioned on the
    group ``label`` (as ``PGRPOTrainer`` conditions its datasets)."""
    message: Prompt = [{"role": "user", "content": prompt}] if chat else prompt
    return conditioning.apply(message, label)


def load_shared_model(model_dir: str | Path, **kwargs: Any) -> PreTrainedModel:
    """The shared weights saved in ``model_dir``: the full model, or the base with the user's LoRA merged in."""
    if (Path(model_dir) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(model_dir, **kwargs).merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)


def load_group_policy(model_dir: str | Path, group: Any, **kwargs: Any) -> PreTrainedModel:
    """The policy of one group: the shared model with ``group``'s adapter merged in; for a group without an adapter,
    the shared model (with a logged notice). ``kwargs`` go to ``from_pretrained`` (e.g. ``dtype``)."""
    folders = read_index(model_dir)["labels"]
    shared = load_shared_model(model_dir, **kwargs)
    if str(group) not in folders:
        logger.warning("Group %r has no adapter in %s; using the shared weights.", group, model_dir)
        return shared
    return PeftModel.from_pretrained(shared, Path(model_dir) / ADAPTERS_DIR / folders[str(group)]).merge_and_unload()


def load_routed_policy(model_dir: str | Path, **kwargs: Any) -> PreTrainedModel:
    """The shared model with every group's adapter, each row routed through its own with
    :func:`pgrpo.models.adapters.route_groups` (mixed-group batches)."""
    index = read_index(model_dir)
    labels = list(index["labels"])
    config = LoraConfig.from_pretrained(str(Path(model_dir) / ADAPTERS_DIR / index["labels"][labels[0]]))
    model = load_shared_model(model_dir, **kwargs)
    GroupAdapters(model, labels, index["r"], index["alpha"], target_modules=sorted(config.target_modules)).load(
        model_dir
    )
    return model


@dataclass
class ServedPolicy:
    """A loaded policy and how its users' prompts reach it.

    ``group``: the one group whose adapter is merged into ``model`` (None: ``model`` serves every group, its adapters,
    if any, routed per row). ``chat``: prompts go through the tokenizer's chat template as user messages.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    conditioning: GroupConditioning
    chat: bool
    group: str | None = None

    def prompts(self, texts: Sequence[str], groups: Sequence[Any]) -> list[Prompt]:
        """Each text as a user of its group asks it (:func:`policy_prompt`)."""
        pairs = zip(texts, groups, strict=True)
        return [policy_prompt(text, group, self.chat, self.conditioning) for text, group in pairs]

    def answer(
        self,
        texts: Sequence[str],
        groups: Sequence[Any] | None = None,
        max_new_tokens: int = 64,
        do_sample: bool = True,
        seed: int = 0,
        sampling: dict[str, Any] | None = None,
    ) -> list[str]:
        """Completions of ``texts``, text i asked by a user of ``groups[i]`` (default: the served group), seeded."""
        if groups is None and self.group is None and self.conditioning.kind != "none":
            raise ValueError("This policy serves every group: give the group of each prompt's user (groups=...).")
        groups = [self.group] * len(texts) if groups is None else [str(group) for group in groups]
        if self.group is not None and set(groups) - {self.group}:
            raise ValueError(f"This policy serves group {self.group!r} only; serve(path, group=None) serves them all.")
        routed = self.group is None and self.conditioning.adapters
        torch.manual_seed(seed)
        return generate_completions(self.model, self.tokenizer, self.prompts(texts, groups),
                                    max_new_tokens=max_new_tokens, do_sample=do_sample, chat=self.chat,
                                    groups=groups if routed else None, sampling=sampling)  # fmt: skip


def serve(
    path: str | Path, group: Any = None, conditioning: GroupConditioning | None = None, **kwargs: Any
) -> ServedPolicy:
    """The policy saved at ``path`` (a run directory or a model folder) serving ``group`` (None: every group).

    ``conditioning``: a model folder's (default: its group adapters if it has them, no text); a run directory's comes
    from its config.yaml and may not be given. ``kwargs`` go to ``from_pretrained`` (e.g. ``dtype``). The model is put
    on the GPU when there is one, in evaluation mode.
    """
    path = Path(path)
    if (path / RUN_CONFIG).is_file():
        if conditioning is not None:
            raise ValueError(f"{path} is a run directory: its conditioning is the one in its {RUN_CONFIG}.")
        conditioning = GroupConditioning.from_settings(read_run_config(path)["trainer"])
        path = path / FINAL_DIR
    elif conditioning is None:
        conditioning = GroupConditioning(adapters=(path / ADAPTERS_DIR / INDEX_FILE).is_file())
    if not conditioning.adapters:
        model = load_shared_model(path, **kwargs)
    elif group is None:
        model = load_routed_policy(path, **kwargs)
    else:
        model = load_group_policy(path, group, **kwargs)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    tokenizer = load_tokenizer(path)
    chat = tokenizer.chat_template is not None  # as in training: instruct models get user (and system) messages
    return ServedPolicy(model, tokenizer, conditioning, chat, None if group is None else str(group))
