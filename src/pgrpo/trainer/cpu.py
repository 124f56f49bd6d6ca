"""The CPU fast path of ``PGRPOTrainer``: the same GRPO step, with work a CPU need not do left out.

Measured on SmolLM2-135M + LoRA (``benchmarks/bench_smollm2_step.py``), two changes, both keeping the math:

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

``cpu_fast_path = False`` on the trainer (class or instance) turns both off: the step is then TRL's as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import trl.trainer.utils as trl_utils

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


class CPUFastPath:
    """Mixin for a ``GRPOTrainer`` subclass (listed before it): see the module docstring."""

    cpu_fast_path: bool = True
    generation_threads: int | None = 1

    def _on_cpu_fast_path(self) -> bool:
        return self.cpu_fast_path and self.accelerator.device.type == "cpu"

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        if not self._on_cpu_fast_path():
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)
        with compact_lm_head():
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)

    def _generate_single_turn(self, *args: Any, **kwargs: Any):
        if not self._on_cpu_fast_path():
            return super()._generate_single_turn(*args, **kwargs)
        with torch_threads(self.generation_threads):
            return super()._generate_single_turn(*args, **kwargs)
