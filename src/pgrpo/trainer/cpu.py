"""The CPU fast path of ``PGRPOTrainer``: the same GRPO step, with work a CPU need not do left out.

Measured on SmolLM2-135M + LoRA (``benchmarks/bench_smollm2_step.py``), four changes; the first two
keep the step bit for bit, the third up to floating-point summation order, the fourth the distribution the
completions are drawn from:

1. **The LM head scores only the completion tokens.** TRL's fused head (``trl.trainer.utils.add_fused_lm_head``)
   projects, on devices without Triton, *every* position of prompt + completion through the
   ``vocab x width`` head (in the forward, and twice more in the backward), then masks the prompt positions
   out: with SmolLM2's 49k vocabulary and a chat prompt longer than the completion, most of the head's GEMMs and
   ``(positions x vocab)`` element-wise passes go to positions whose log-probabilities are thrown away. TRL only
   does this to keep tile shapes fixed for compilers; on a CPU (eager) we let it take its Triton-device branch
   (``compact``: ``hidden[mask]``, then ``masked_scatter`` back), for the duration of
   ``_get_per_token_logps_and_entropies`` only. Same kernel, same per-row arithmetic: the log-probabilities and
   their gradients are the same (tested bit for bit on the tiny policies).
2. **Generation runs on one thread.** Decoding is ~1,200 small ops per token (M = the number of sequences);
   with two OpenMP threads on a machine whose cores are shared, every op waits at a barrier for a thread the
   scheduler has parked (5x slower decoding was measured on the shared 2-core machine). Generation restores
   the thread count when it ends; set ``generation_threads`` on the trainer (``None``: keep torch's) to change it.
3. **Each distinct prompt goes through the body once** (:mod:`pgrpo.models.prefix`), in generation's prefill and
   in the loss's forward and backward, instead of once per completion (``num_generations`` times): on SmolLM2's
   ~45-token chat prompts and 32-token completions, ~40% of the loss's positions. Equal up to floating-point summation
   order (GEMMs of fewer rows), except that rows sharing a prompt share its LoRA dropout mask there. With per-row
   group adapters, rows share a prompt only if they also share its adapter (``_prefix_router``). Not with gradient
   checkpointing (no cache while training), a model wrapped for distributed training (its forward must run once per
   backward), extra model inputs (images), MoE router losses, beam search or several sequences per prompt in
   ``generate``, static caches, or caches other than keys and values (state-space, linear attention: the unshared call
   runs instead);
   ``share_prompt_prefix = False`` turns it off alone.
4. **Sampled tokens are drawn by inverse CDF** (:mod:`pgrpo.models.token_sampling`): one uniform per row instead of
   ``torch.multinomial``'s one exponential per vocabulary entry (~30 ms per token for 24 rows of a 49k vocabulary,
   ~15% of SmolLM2's decode step on one thread). The same distribution, another random stream: completions differ
   from ``GRPOTrainer``'s of the same seed; ``inverse_cdf_sampling = False`` turns it off alone.

``cpu_fast_path = False`` on the trainer (class or instance) turns all four off: the step is then TRL's as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import trl.trainer.utils as trl_utils

from pgrpo.models.prefix import RowRouting, generate_with_shared_prefill, shared_prefix_forward
from pgrpo.models.token_sampling import inverse_cdf_multinomial
from pgrpo.trainer.config import CHECKPOINTING_FIELD

# The TRL function whose answer decides whether the fused LM head scores only the labelled positions (trl 1.16).
_COMPACT_SWITCH = "_use_triton"
if not callable(getattr(trl_utils, _COMPACT_SWITCH, None)):
    raise ImportError(
        f"pgrpo's CPU fast path needs trl.trainer.utils.{_COMPACT_SWITCH} (trl 1.16); install a supported trl."
    )


@contextmanager
def compact_lm_head() -> Iterator[None]:
    """Within the block, TRL's fused LM head scores only the positions with a label, on every device."""
    original = getattr(trl_utils, _COMPACT_SWITCH)
    setattr(trl_utils, _COMPACT_SWITCH, lambda device: True)
    try:
        yield
    finally:
        setattr(trl_utils, _COMPACT_SWITCH, original)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Within the block, torch uses ``threads`` intra-op threads (``None``: unchanged)."""
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextmanager
def shared_prefill(model: Any, router: RowRouting | None = None) -> Iterator[None]:
    """Within the block, ``model.generate`` on prompt ids alone prefills each distinct prompt (and, with a ``router``,
    adapter) once."""
    own = "generate" in vars(model)  # an instance attribute (a wrapper) is kept, and restored
    generate = model.generate

    def prefilling_generate(input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        return generate_with_shared_prefill(model, generate, input_ids, attention_mask, router, **kwargs)

    model.generate = prefilling_generate
    try:
        yield
    finally:
        if own:
            model.generate = generate
        else:
            del model.generate


class SharedPrefixCall:
    """Calls ``model`` as TRL's log-probability loop does, each distinct prompt's positions through it once."""

    def __init__(self, model: Any, prompt_length: int, router: RowRouting | None = None) -> None:
        self.model, self.prompt_length, self.router = model, prompt_length, router

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        # the last prompt position predicts the first completion token: it stays with the scored positions
        prefix = self.prompt_length - 1
        return shared_prefix_forward(self.model, input_ids, attention_mask, prefix, self.router, **kwargs)


class CPUFastPath:
    """Mixin for a ``GRPOTrainer`` subclass (listed before it): see the module docstring."""

    cpu_fast_path: bool = True
    generation_threads: int | None = 1
    share_prompt_prefix: bool = True
    inverse_cdf_sampling: bool = True

    def _on_cpu_fast_path(self) -> bool:
        return self.cpu_fast_path and self.accelerator.device.type == "cpu"

    def _shares_prompt_prefix(self) -> bool:
        """Whether prompts repeated in a batch may share their positions' work (``share_prompt_prefix``)."""
        return self.share_prompt_prefix

    def _prefix_router(self) -> RowRouting | None:
        """The per-row routing of the model's forwards (group adapters), or None: rows share a prompt only if they
        share its routed row too."""
        return None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, **inputs: Any):  # fmt: skip
        logps = functools.partial(super()._get_per_token_logps_and_entropies, batch_size=batch_size,
                                  compute_entropy=compute_entropy, **inputs)  # fmt: skip
        if not self._on_cpu_fast_path():
            return logps(model, input_ids, attention_mask, logits_to_keep)
        shared = (
            self._shares_prompt_prefix()
            and self.accelerator.unwrap_model(model) is model
            and not (torch.is_grad_enabled() and getattr(self.args, CHECKPOINTING_FIELD))
            and all(value is None or value is False for value in inputs.values())
            and not getattr(self.model.config.get_text_config(), "output_router_logits", False)  # MoE aux loss
        )
        if shared:
            model = SharedPrefixCall(model, input_ids.shape[1] - logits_to_keep, self._prefix_router())
        with compact_lm_head():
            return logps(model, input_ids, attention_mask, logits_to_keep)

    def _generate_single_turn(self, *args: Any, **kwargs: Any):
        if not self._on_cpu_fast_path():
            return super()._generate_single_turn(*args, **kwargs)
        prefill = shared_prefill(self.model, self._prefix_router()) if self._shares_prompt_prefix() else nullcontext()
        sampling = inverse_cdf_multinomial() if self.inverse_cdf_sampling else nullcontext()
        with torch_threads(self.generation_threads), prefill, sampling:
            return super()._generate_single_turn(*args, **kwargs)
