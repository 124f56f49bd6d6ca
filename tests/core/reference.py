"""Direct NumPy float64 references for the engine (slow, obvious, loop-based)."""

from __future__ import annotations

import numpy as np


def history_reference(
    rewards: np.ndarray,
    groups: list,
    history: str,
    decay: float = 0.99,
    window: int = 1024,
    unbiased: bool = False,
    cuts: list[int] | None = None,
) -> dict:
    """Per-group (count, mean, std) from every finite reward seen, by the definition of each history.

    ``cuts`` are the batch boundaries [0, ..., len(rewards)] (default: one batch). The window history covers the
    last max(window, m) rewards of a group, m its finite rewards in the last batch that had any.
    """
    cuts = cuts if cuts is not None else [0, len(rewards)]
    batch_of = np.searchsorted(cuts, np.arange(len(rewards)), side="right") - 1
    out = {}
    for label in dict.fromkeys(groups):
        rows = [i for i, (r, g) in enumerate(zip(rewards, groups, strict=True)) if g == label and np.isfinite(r)]
        x = np.array([rewards[i] for i in rows], dtype=np.float64)
        count = len(x)
        if history == "window" and rows:
            in_last_batch = sum(batch_of[i] == batch_of[rows[-1]] for i in rows)
            x = x[-max(window, in_last_batch) :]
        w = decay ** np.arange(len(x) - 1, -1, -1, dtype=np.float64) if history == "ema" else np.ones(len(x))
        if len(x) == 0:
            out[label] = (count, 0.0, 0.0)
            continue
        mean = np.sum(w * x) / np.sum(w)
        m2 = np.sum(w * (x - mean) ** 2)
        denominator = np.sum(w) - np.sum(w * w) / np.sum(w) if unbiased else np.sum(w)
        std = np.sqrt(m2 / denominator) if denominator > 0 else 0.0
        out[label] = (count, mean, std)
    return out


def prompt_stats(rewards: np.ndarray, prompt_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, std, count = np.zeros(len(rewards)), np.zeros(len(rewards)), np.zeros(len(rewards))
    for p in np.unique(prompt_index):
        rows = prompt_index == p
        x = rewards[rows][np.isfinite(rewards[rows])]
        mean[rows] = x.mean() if len(x) else 0.0
        std[rows] = x.std(ddof=1) if len(x) > 1 else 0.0
        count[rows] = len(x)
    return mean, std, count


def advantage_reference(
    name: str,
    rewards: np.ndarray,
    prompt_index: np.ndarray,
    history_mean: np.ndarray,
    history_std: np.ndarray,
    ready: np.ndarray,
    eps: float,
) -> np.ndarray:
    """Every estimator written out directly from its formula."""
    mean, std, _count = prompt_stats(rewards, prompt_index)
    grpo = (rewards - mean) / (std + eps)
    if name == "grpo":
        out = grpo
    elif name == "dr_grpo":
        out = rewards - mean
    elif name == "batch_std":
        finite = rewards[np.isfinite(rewards)]
        out = (rewards - mean) / ((finite.std(ddof=1) if len(finite) > 1 else 0.0) + eps)
    elif name == "rloo":
        out = np.zeros(len(rewards))
        for i in range(len(rewards)):
            others = [
                rewards[j]
                for j in range(len(rewards))
                if j != i and prompt_index[j] == prompt_index[i] and np.isfinite(rewards[j])
            ]
            out[i] = rewards[i] - np.mean(others) if others else 0.0
    elif name == "pgrpo":
        out = np.where(ready, (rewards - history_mean) / (history_std + eps), grpo)
    elif name == "pgrpo_scale":
        out = np.where(ready, (rewards - mean) / (history_std + eps), grpo)
    else:
        raise KeyError(name)
    return np.where(np.isfinite(rewards), out, 0.0)


def sampling_reference(group_index: np.ndarray, alpha: float) -> np.ndarray:
    """Row probabilities of group-balanced sampling written out: p(g) = share_g^alpha / sum_h share_h^alpha,
    then uniform over the n_g rows of g."""
    groups = sorted(set(group_index.tolist()))
    rows = {g: int(np.sum(group_index == g)) for g in groups}
    mass = {g: (rows[g] / len(group_index)) ** alpha for g in groups}
    total = sum(mass.values())
    return np.array([mass[g] / total / rows[g] for g in group_index.tolist()])


def balanced_weights_reference(groups: list) -> np.ndarray:
    """w_i = N / (K_present * n_g(i)), counted label by label."""
    counts = {g: groups.count(g) for g in dict.fromkeys(groups)}
    return np.array([len(groups) / (len(counts) * counts[g]) for g in groups])


def worst_group_reference(
    batches: list[tuple[np.ndarray, list]],
    step: float,
    floor: float,
    ceiling: float,
    eps: float,
    history: str = "cumulative",
    **history_options,
) -> tuple[list[np.ndarray], dict]:
    """Weights of every training batch of a sequence, and the final log-weights per label, by the definition:

    for every label with a finite reward in the batch, lambda += step * (mbar - mu_g) / (s + eps), mbar the mean
    of those labels' mu, clipped to
    [log floor, log ceiling]; mu_g from the history of all rewards so far; w = exp(lambda) / batch mean.
    """
    log_weights: dict = {}
    rewards_so_far: list[float] = []
    groups_so_far: list = []
    cuts = [0]
    weights = []
    for rewards, groups in batches:
        rewards_so_far += list(rewards)
        groups_so_far += list(groups)
        cuts.append(len(rewards_so_far))
        past = history_reference(np.array(rewards_so_far), groups_so_far, history, cuts=cuts, **history_options)
        finite = [r for r in rewards if np.isfinite(r)]
        present = list(dict.fromkeys(g for r, g in zip(rewards, groups, strict=True) if np.isfinite(r)))
        if present:  # a batch without any finite reward moves no weight
            average = np.mean([past[label][1] for label in present])  # the present groups' history means, averaged
        for label in present:
            shortfall = (average - past[label][1]) / (np.std(finite) + eps)
            stepped = log_weights.get(label, 0.0) + step * shortfall
            log_weights[label] = float(np.clip(stepped, np.log(floor), np.log(ceiling)))
        w = np.exp([log_weights.get(g, 0.0) for g in groups])
        weights.append(w / w.mean())
    return weights, log_weights
