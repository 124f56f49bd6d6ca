"""`pgrpo judge RUN_A RUN_B`: generate, judge every pair, tally per group, print the table, write the JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgrpo.command import Command
from pgrpo.experiments.judge.llm import METHODS, LLMJudge, judge_pairs
from pgrpo.experiments.judge.runs import generate_for_run, run_task_spec, same_task_spec
from pgrpo.experiments.judge.tally import tally_by_group
from pgrpo.experiments.judge.verdicts import TIE_TOLERANCE, reward_verdict

if TYPE_CHECKING:
    from pgrpo.tasks.base import Task


def _check_options(judge: str, num_prompts: int, samples: int, llm_url: str | None) -> None:
    if judge not in ("reward", "llm"):
        raise ValueError(f"judge must be 'reward' or 'llm', got {judge!r}.")
    if samples < 1 or num_prompts < 1:
        raise ValueError(f"num_prompts and samples must be >= 1, got {num_prompts} and {samples}.")
    if judge == "llm" and not llm_url:
        raise ValueError("The llm judge needs --llm_url (an OpenAI-compatible server, e.g. http://127.0.0.1:8000).")


def _judged_pairs(
    task: Task,
    rows: list[dict[str, Any]],
    completions_a: list[str],
    completions_b: list[str],
    llm: LLMJudge | None,
    seed: int,
) -> list[dict[str, Any]]:
    """One record per row: group, prompt, both completions, their task rewards and verdicts (the reward's, and the
    LLM's when there is one)."""
    from pgrpo.experiments.evaluation import score

    prompts = [row["prompt"] for row in rows]
    rewards_a = score(task, rows, completions_a, prompts)
    rewards_b = score(task, rows, completions_b, prompts)
    groups = [str(row[task.group_column]) for row in rows]
    columns = zip(groups, prompts, completions_a, completions_b, rewards_a, rewards_b, strict=True)
    pairs = [
        {"group": g, "prompt": p, "completion_a": ca, "completion_b": cb, "reward_a": ra, "reward_b": rb,
         "reward_verdict": reward_verdict(ra, rb)}
        for g, p, ca, cb, ra, rb in columns
    ]  # fmt: skip
    if llm is not None:
        for pair, judgement in zip(pairs, judge_pairs(llm, prompts, completions_a, completions_b, seed), strict=True):
            pair.update(judgement)
    else:
        for pair in pairs:
            pair["verdict"] = pair["reward_verdict"]
    return pairs


def _llm_metadata(
    llm: LLMJudge, pairs: list[dict[str, Any]], llm_url: str | None, api_key_env: str, llm_max_tokens: int
) -> dict[str, Any]:
    """What the LLM judge was and how often it agreed with the task reward (on the verdicts it gave)."""
    parsed = [p for p in pairs if p["verdict"] != "unparseable"]
    return {
        "llm_url": llm_url,
        "llm_base_url": llm.base_url,
        "llm_model": llm.model,
        "llm_verdict_method": llm.method,
        "api_key_env": api_key_env,
        "api_key_used": llm.api_key_used,
        "llm_max_tokens": llm_max_tokens,
        "llm_requests": llm.requests,
        "agreement_with_reward": (
            sum(p["verdict"] == p["reward_verdict"] for p in parsed) / len(parsed) if parsed else math.nan
        ),
    }


def judge_runs(
    run_a: str | Path,
    run_b: str | Path,
    num_prompts: int = 70,
    samples: int = 1,
    judge: str = "reward",
    llm_url: str | None = None,
    llm_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    seed: int = 0,
    max_new_tokens: int | None = None,
    llm_max_tokens: int = 16,
    llm_timeout: float = 120.0,
    llm_max_retries: int = 2,
    llm_verdict: str = "auto",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Per-group win rate of run A's policy over run B's (see the package docstring).

    Returns ``{"per_group": {group: counts}, "overall": counts, "mean_group_win_rate_a", "metadata": {...},
    "pairs": [...]}`` where counts = ``{"n", "wins_a", "wins_b", "ties", "unparseable", "win_rate_a"}`` and
    each pair records group, prompt, both completions, both task rewards and the verdict (plus, for ``llm``,
    the judge's raw answer, the order shown and the confidence). With ``out``, also written as JSON.
    ``max_new_tokens`` defaults to the larger ``max_completion_length`` of the two runs (else 32).
    """
    from pgrpo.experiments.evaluation import balanced_rows
    from pgrpo.tasks import build_task

    _check_options(judge, num_prompts, samples, llm_url)
    run_a, run_b = Path(run_a), Path(run_b)
    spec_a, spec_b = run_task_spec(run_a), run_task_spec(run_b)
    same_task_spec(spec_a, spec_b, run_a, run_b)
    llm = None
    if judge == "llm":  # before generating: an unreachable server fails fast
        llm = LLMJudge(llm_url, llm_model, api_key_env, llm_timeout, llm_max_retries, llm_max_tokens, llm_verdict)
    if max_new_tokens is None:
        lengths = [s["max_completion_length"] for s in (spec_a, spec_b) if s["max_completion_length"]]
        max_new_tokens = int(max(lengths)) if lengths else 32

    task = build_task(spec_a["task"], seed=spec_a["task_seed"], **spec_a["task_options"])
    rows = balanced_rows(task.eval_dataset.to_list(), task.group_column, num_prompts)
    rows = [row for row in rows for _ in range(samples)]
    prompts = [row["prompt"] for row in rows]
    do_sample = samples > 1
    asking = [str(row[task.group_column]) for row in rows]  # the users' own groups
    completions_a = generate_for_run(run_a, prompts, asking, max_new_tokens, do_sample, seed)
    completions_b = generate_for_run(run_b, prompts, asking, max_new_tokens, do_sample, seed)
    pairs = _judged_pairs(task, rows, completions_a, completions_b, llm, seed)
    groups = [pair["group"] for pair in pairs]

    metadata: dict[str, Any] = {
        "judge": judge,
        "run_a": str(run_a),
        "run_b": str(run_b),
        "task": spec_a["task"],
        "task_options": spec_a["task_options"],
        "task_seed": spec_a["task_seed"],
        "num_prompts": len(rows) // samples,
        "samples": samples,
        "decoding": "sampled" if do_sample else "greedy",
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "tie_tolerance": TIE_TOLERANCE,
    }
    if llm is not None:
        metadata.update(_llm_metadata(llm, pairs, llm_url, api_key_env, llm_max_tokens))
    results = {**tally_by_group(groups, [pair["verdict"] for pair in pairs]), "metadata": metadata, "pairs": pairs}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2, default=float))
    return results


def format_table(results: dict[str, Any]) -> str:
    """The per-group table ``pgrpo judge`` prints."""
    meta = results["metadata"]
    judge = "task reward" if meta["judge"] == "reward" else f"LLM {meta['llm_model']} at {meta['llm_url']}"
    lines = [
        f"A = {meta['run_a']}",
        f"B = {meta['run_b']}",
        f"task {meta['task']}, judge: {judge}, {meta['num_prompts']} held-out prompts x {meta['samples']} "
        f"({meta['decoding']})",
        "",
        f"{'group':<16}{'n':>5}{'A wins':>8}{'B wins':>8}{'ties':>6}{'unparsed':>10}{'win rate A':>12}",
    ]
    rows = [*results["per_group"].items(), ("overall", results["overall"])]
    for name, c in rows:
        if name == "overall":
            lines.append("-" * 65)
        lines.append(
            f"{name:<16}{c['n']:>5}{c['wins_a']:>8}{c['wins_b']:>8}{c['ties']:>6}{c['unparseable']:>10}"
            f"{c['win_rate_a']:>12.3f}"
        )
    lines.append(f"{'mean over groups':<53}{results['mean_group_win_rate_a']:>12.3f}")
    if meta["judge"] == "llm":
        lines.append(
            f"LLM requests: {meta['llm_requests']}, verdicts read from: {meta['llm_verdict_method']} "
            "(pairs with identical completions are ties unasked)"
        )
        lines.append(f"LLM verdicts agreeing with the task reward (parsed pairs): {meta['agreement_with_reward']:.3f}")
    return "\n".join(lines)


@dataclass
class JudgeArguments:
    """`pgrpo judge A B`: per-group win rate of run A's final policy over run B's on the task's held-out prompts."""

    run_a: str = field(default="", metadata={"help": "Run directory A (config.yaml + final/)."})
    run_b: str = field(default="", metadata={"help": "Run directory B, trained on the same task."})
    judge: str = field(
        default="reward",
        metadata={
            "help": "reward: the task's reward model (offline); llm: an OpenAI-compatible endpoint.",
            "choices": ["reward", "llm"],
        },
    )
    llm_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible server, with or without /v1 (e.g. http://127.0.0.1:8000)."}
    )
    llm_model: str | None = field(default=None, metadata={"help": "Model name on that server (default: its only one)."})
    llm_verdict: str = field(
        default="auto",
        metadata={
            "help": "How to read the LLM's verdict: logprobs (P(A) vs P(B) of its first token), structured (JSON "
            "schema), letter (its answer's first letter), or auto: the first of these the server supports.",
            "choices": list(METHODS),
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable holding the API key (sent only if set; never printed)."},
    )
    num_prompts: int = field(default=70, metadata={"help": "Held-out prompts, balanced across groups."})
    samples: int = field(default=1, metadata={"help": "Completions per prompt (1: greedy, >1: sampled)."})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Completion length (default: the runs' max_completion_length)."}
    )
    llm_max_tokens: int = field(default=16, metadata={"help": "Tokens the LLM judge may answer with."})
    llm_timeout: float = field(default=120.0, metadata={"help": "Seconds to wait for each LLM answer."})
    llm_max_retries: int = field(
        default=2,
        metadata={
            "help": "Retries of a failed LLM request (connection errors, timeouts, HTTP 408/409/429/5xx), with backoff."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of sampling and of the A/B order shown to the LLM."})
    out: str | None = field(
        default=None, metadata={"help": "Write the full results (per group, pairs, metadata) to this JSON file."}
    )


def judge_command(args: JudgeArguments) -> int:
    """Run ``pgrpo judge`` with parsed arguments; prints the table."""
    if not (args.run_a and args.run_b):
        raise ValueError("Give two run directories: pgrpo judge RUN_A RUN_B.")
    results = judge_runs(**asdict(args))  # the arguments are judge_runs' parameters, by name
    print(format_table(results))
    if args.out:
        print(f"results: {args.out}")
    return 0


JUDGE = Command(arguments=(JudgeArguments,), run=judge_command, positional=("run_a", "run_b"))
