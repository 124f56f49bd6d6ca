"""Pairwise judging of two trained policies: per-group win rate of run A over run B on held-out prompts.

    pgrpo judge runs/grpo runs/pgrpo                                   # judged by the task's reward
    pgrpo judge runs/grpo runs/pgrpo --judge llm --llm_url http://127.0.0.1:8000 [--llm_model NAME]

Both runs must be on the same task (name, options and task seed, so the held-out prompts are
the same and held out for both). The two ``final/`` policies answer the same group-balanced
held-out prompts (``samples`` completions each: greedy when ``samples == 1``, sampled
otherwise, seeded), and each pair (A's i-th answer, B's i-th answer) gets one verdict:

* ``reward``: the task's reward model, offline; A wins when reward_a > reward_b + 1e-9, B wins
  when reward_b > reward_a + 1e-9, else a tie. A ``None``/NaN reward makes the pair unparseable.
* ``llm``: an LLM behind any OpenAI-compatible endpoint (``transformers serve``, vLLM, llama.cpp,
  a hosted API) says which response better fits the user the prompt names, the two shown in a
  seeded random order per pair (position bias cancels on average); identical completions are a
  tie without a request. How its verdict is read (token probabilities, JSON, a leading letter)
  and how the API key is handled: :mod:`pgrpo.experiments.judge.llm`.

Win rate of A in a group = (A wins + 0.5 * (ties + unparseable)) / n, so 0.5 means "no difference".

Modules, one concern each: ``runs`` (run directories and their policies' completions),
``verdicts`` (a verdict from rewards or from an LLM's answer), ``llm`` (the LLM judge client),
``tally`` (counts and win rates per group), ``command`` (``judge_runs``, the table, the CLI).
"""

from pgrpo.experiments.judge.command import JUDGE, judge_runs

__all__ = ["JUDGE", "judge_runs"]
