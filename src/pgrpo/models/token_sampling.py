"""Drawing a sampled token: one uniform per row instead of one exponential per vocabulary entry.

``generate`` draws each sampled token with ``torch.multinomial(probs, 1)``, which on a CPU races one exponential
variate per vocabulary entry (the argmax of p_v / E_v, E_v ~ Exp(1)): for 24 rows of SmolLM2's 49k-token vocabulary
that is ~30 ms per token on one thread, ~15% of a decode step. Inverse-CDF sampling draws from the same categorical
distribution with one uniform per row,

    token = min { v : F_v > u * F_V },   F_v = p_1 + ... + p_v,   u ~ U[0, 1)

(~1.5 ms; F summed in float64 and kept in float32, so each weight counts to ~1e-7 of the total, the precision
torch's float32 race has too; F's last column also gives the totals that tell valid weights). Same distribution,
another random stream: a seeded run stays reproducible but draws other tokens than ``torch.multinomial`` would.
``inverse_cdf_multinomial()`` makes ``torch.multinomial`` do this for the calls it covers (one draw per row of a 2-D
CPU float tensor of valid probabilities) and leaves every other call, including the invalid ones it must reject, to
torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def cumulative_weights(probs: torch.Tensor) -> torch.Tensor:
    """(N, V) running sums F_v of the weights ``probs`` along each row, in at least float32 (a CPU cumsum
    accumulates float32 in float64, then rounds each entry: a weight is kept to ~1e-7 of the total; float64 would be
    slower, fresh 8-byte buffers of N x V). The last column holds each row's total."""
    return probs.to(torch.promote_types(probs.dtype, torch.float32)).cumsum(-1)


def draw_from_cdf(cdf: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 1) long: per row of the running sums ``cdf`` (:func:`cumulative_weights`, positive finite totals), the
    first index v with F_v > u * F_V, u ~ U[0, 1): index v with probability (F_v - F_{v-1}) / F_V."""
    total = cdf[:, -1:]
    uniform = torch.rand(total.shape, dtype=cdf.dtype, generator=generator, device=cdf.device)
    # below the total even where u * total rounds up to it: the first index past u then has a positive weight
    threshold = torch.minimum(uniform * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, threshold, right=True)


def inverse_cdf_sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of the categorical distributions ``probs``.

    Args:
        probs: (N, V) non-negative weights with a positive sum per row (need not sum to 1).
        generator: the random generator (default: torch's global one).
    Returns:
        (N, 1) long: row n's index v with probability probs[n, v] / sum(probs[n]); an entry of weight 0 is never drawn.
    """
    return draw_from_cdf(cumulative_weights(probs), generator)


def _covered(probs: torch.Tensor, num_samples: int, out: torch.Tensor | None) -> bool:
    """Whether ``torch.multinomial(probs, num_samples, out=out)`` asks for one draw per row of a 2-D CPU float
    tensor (whether its weights are valid is checked on their running sums)."""
    if out is not None or num_samples != 1 or probs.dim() != 2 or probs.device.type != "cpu":
        return False
    return probs.is_floating_point() and probs.shape[-1] > 0


def _valid(probs: torch.Tensor, cdf: torch.Tensor) -> bool:
    """Whether every row of ``probs`` is non-negative with a finite, positive total (the last column of ``cdf``)."""
    total = cdf[:, -1]
    return bool(torch.isfinite(total).all() and (total > 0).all() and probs.min() >= 0)


@contextmanager
def inverse_cdf_multinomial() -> Iterator[None]:
    """Within the block, ``torch.multinomial`` draws one sample per row by :func:`inverse_cdf_sample` (2-D CPU
    probabilities; any other call, and any invalid input, goes to torch's own)."""
    original = torch.multinomial

    def multinomial(
        input: torch.Tensor,
        num_samples: int,
        replacement: bool = False,
        *,
        generator: torch.Generator | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # one draw: with or without replacement alike
        if _covered(input, num_samples, out) and _valid(input, cdf := cumulative_weights(input)):
            return draw_from_cdf(cdf, generator)
        return original(input, num_samples, replacement, generator=generator, out=out)

    torch.multinomial = multinomial
    try:
        yield
    finally:
        torch.multinomial = original
