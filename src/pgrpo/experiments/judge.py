"""Pairwise judging of two trained policies: per-group win rate of run A over run B on held-out prompts.

    pgrpo judge runs/grpo runs/pgrpo                                   # judged by the task's reward
    pgrpo judge runs/grpo runs/pgrpo --judge llm --llm_url http://127.0.0.1:8000 --llm_model NAME

Both runs must be on the same task (name, options and task seed, so the held-out prompts are
the same and held out for both). The two ``final/`` policies answer the same group-balanced
held-out prompts (``samples`` completions each: greedy when ``samples == 1``, sampled
otherwise, seeded), and each pair (A's i-th answer, B's i-th answer) gets one verdict:

* ``reward``: the task's reward model, offline; A wins when reward_a > reward_b + 1e-9, B wins
  when reward_b > reward_a + 1e-9, else a tie. A ``None``/NaN reward makes the pair unjudged.
* ``llm``: any OpenAI-compatible chat-completions endpoint (``transformers serve``, vLLM, llama.cpp,
  a hosted API) is asked which response better fits the user the prompt names. The two responses
  are shown in a seeded random order per pair (position bias cancels on average), the answer is
  parsed for A / B / tie, and an answer that cannot be parsed is counted as ``unparseable``.
  Identical completions are a tie without a request. The API
  key is read from the environment variable ``api_key_env`` (sent as ``Authorization: Bearer``
  only when set) and is never printed, logged or written.

Win rate of A in a group = (A wins + 0.5 * (ties + unparseable)) / n, so 0.5 means "no
difference" and a policy judged against itself scores exactly 0.5 with the reward judge.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pgrpo.cli import Command

TIE_TOLERANCE = 1e-9
VERDICTS = ("a", "b", "tie", "unparseable")

JUDGE_SYSTEM = "You are a fair, careful judge of assistant responses. You answer with a single letter."
JUDGE_TEMPLATE = """A user sent the request below, and two assistants answered it. The request says who the user is.
Decide which response better fits this particular user: their tastes, style and needs, not just general quality.

[Request]
{prompt}

[Response A]
{first}

[Response B]
{second}

Which response better fits this user? Answer with exactly one letter: A or B (or T if they are equally good)."""


# --------------------------------------------------------------------------------------------- runs


def run_task_spec(run_dir: Path) -> dict[str, Any]:
    """``{"task", "task_options", "task_seed", "max_completion_length"}`` of a run directory's config.yaml."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a pgrpo run directory (no config.yaml).")
    if not (run_dir / "final").is_dir():
        raise FileNotFoundError(f"{run_dir} has no final/ policy; the run has not finished training.")
    config = yaml.safe_load(config_path.read_text()) or {}
    run = config.get("run", {})
    options = run.get("task_options", "{}")
    options = json.loads(options) if isinstance(options, str) else dict(options or {})
    return {
        "task": run.get("task", "personas"),
        "task_options": options,
        "task_seed": int(run.get("task_seed", 0)),
        "max_completion_length": config.get("trainer", {}).get("max_completion_length"),
    }


def same_task_spec(spec_a: dict[str, Any], spec_b: dict[str, Any], run_a: Path, run_b: Path) -> None:
    """Raise ValueError unless both runs were trained on the same task build (held-out prompts identical)."""
    keys = ("task", "task_options", "task_seed")
    differing = [key for key in keys if spec_a[key] != spec_b[key]]
    if differing:
        detail = "; ".join(f"{key}: {spec_a[key]!r} vs {spec_b[key]!r}" for key in differing)
        raise ValueError(
            f"Runs {run_a} and {run_b} are on different tasks ({detail}). Pairwise judging needs the same task, "
            "task options and task seed, so both policies answer the same held-out prompts."
        )


def generate_for_run(run_dir: Path, prompts: list[str], max_new_tokens: int, do_sample: bool, seed: int) -> list[str]:
    """Completions of the run's final/ policy for ``prompts`` (through its chat template if it has one; seeded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pgrpo.models import generate_completions

    path = run_dir / "final"
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    chat = tokenizer.chat_template is not None  # as in training: instruct models get a user message
    torch.manual_seed(seed)
    completions = generate_completions(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=do_sample, chat=chat
    )
    del model
    return completions


# ------------------------------------------------------------------------------------------ verdicts


def reward_verdict(reward_a: float, reward_b: float) -> str:
    if not (math.isfinite(reward_a) and math.isfinite(reward_b)):
        return "unparseable"
    if reward_a > reward_b + TIE_TOLERANCE:
        return "a"
    if reward_b > reward_a + TIE_TOLERANCE:
        return "b"
    return "tie"


_WHOLE = re.compile(r"^\W*(?:response|answer|option|assistant)?\s*\(?([AB])\)?\W*$", re.IGNORECASE)
_TIE_WHOLE = re.compile(r"^\W*(?:t|tie|draw|equal|equally good|both|neither)\b", re.IGNORECASE)
_EXPLICIT = [
    re.compile(
        r"\b(?:answer|verdict|choice|winner|better\s+(?:response|one|fit)|choose|pick|prefer|letter)\b"
        r"\s*(?:is|would\s+be)?\s*[:\-]?\s*(?:response\s+|option\s+|assistant\s+)?[*\"'(\[]*(?-i:([AB]))\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:response|option|assistant)\s+\(?(?-i:([AB]))\)?\s+(?:is|was|fits|better|wins)", re.IGNORECASE),
]
_TIE_SENTENCE = re.compile(
    r"\b(?:it'?s\s+a\s+tie|tie|equally\s+(?:good|well|fitting)|both\s+(?:are|responses)\s+equally)\b", re.IGNORECASE
)
_LEADING = re.compile(r"^[\s*\"'(\[]*([AB])(?=$|[\s]*[.:)\]*,\n]|\s*$)")
_MENTION = re.compile(r"\b(?:response|option|assistant)\s+\(?(?-i:([AB]))\b", re.IGNORECASE)


def parse_verdict(text: str) -> str:
    """'A', 'B' or 'tie' chosen in a judge's answer (letters are positions as shown), or 'unparseable'.

    In order: the whole answer is one choice ("B", "(A).", "**Response B**", "tie"); an explicit
    statement ("The answer is A", "Response B is better"), unless it names both letters; a tie
    statement; a leading letter followed by punctuation or a line break ("A: ...", "B.\\n...");
    a single letter among the "Response X" mentions. Anything else is unparseable.
    """
    text = (text or "").strip().replace("**", "")
    if not text:
        return "unparseable"
    first_line = text.splitlines()[0].strip()
    for candidate in (text, first_line):
        whole = _WHOLE.match(candidate)
        if whole:
            return whole.group(1).upper()
        if _TIE_WHOLE.match(candidate) and len(candidate) <= 24:
            return "tie"
    for pattern in _EXPLICIT:
        letters = {m.upper() for m in pattern.findall(text)}
        if len(letters) == 1:
            return letters.pop()
    if _TIE_SENTENCE.search(text):
        return "tie"
    leading = _LEADING.match(text)
    if leading:
        return leading.group(1).upper()
    mentioned = {m.upper() for m in _MENTION.findall(text)}
    if len(mentioned) == 1:
        return mentioned.pop()
    return "unparseable"


# --------------------------------------------------------------------------------------- LLM client


def chat_completions_url(url: str) -> str:
    """``{base}/v1/chat/completions`` for a server URL given with or without ``/v1``; a URL that already ends
    in ``/chat/completions`` is used as it is (for APIs whose prefix is not ``/v1``)."""
    base = url.strip().rstrip("/")
    if not re.match(r"^https?://", base):
        raise ValueError(f"LLM judge URL must start with http:// or https://, got {url!r}.")
    if base.endswith("/chat/completions"):
        return base
    return f"{base.removesuffix('/v1')}/v1/chat/completions"


class LLMClient:
    """Minimal OpenAI-compatible chat-completions client (standard library only).

    The key is read from ``os.environ[api_key_env]`` at request time and only placed in the
    Authorization header; it appears in no attribute, message or exception.
    """

    def __init__(
        self, url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0, retries: int = 2
    ) -> None:
        self.url = url
        self.endpoint = chat_completions_url(url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retries = retries

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(payload).encode()
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(endpoint, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode())
            except urllib.error.HTTPError as error:
                body = error.read().decode(errors="replace")[:500]
                if (error.code == 429 or error.code >= 500) and attempt < self.retries:
                    time.sleep(2.0**attempt)
                    continue
                hint = f" (is the key set in ${self.api_key_env}?)" if error.code in (401, 403) else ""
                raise RuntimeError(f"LLM judge at {endpoint} answered HTTP {error.code}{hint}: {body}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = getattr(error, "reason", error)
                if isinstance(reason, TimeoutError):
                    if attempt < self.retries:
                        continue
                    reason = f"no answer within {self.timeout:g} s ({self.retries + 1} tries)"
                raise ConnectionError(
                    f"Could not reach the LLM judge at {endpoint}: {reason}. Is the server running "
                    "(e.g. `transformers serve MODEL --host 127.0.0.1 --port 8000`) and is --llm_url right?"
                ) from None
            except json.JSONDecodeError as error:
                raise RuntimeError(f"LLM judge at {endpoint} did not answer JSON: {error}") from None
        raise AssertionError("unreachable")

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 16, temperature: float = 0.0) -> str:
        """The assistant message text of one non-streaming chat completion."""
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        answer = self._post(self.endpoint, payload)
        try:
            return answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(
                f"LLM judge at {self.endpoint} answered without choices[0].message: {json.dumps(answer)[:300]}"
            ) from None


def discover_model(url: str, api_key_env: str, timeout: float = 30.0) -> str:
    """The only model a server lists at ``/v1/models`` (for when --llm_model is not given)."""
    endpoint = chat_completions_url(url).removesuffix("/chat/completions") + "/models"
    client = LLMClient(url, "", api_key_env, timeout)
    request = urllib.request.Request(endpoint, headers=client._headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            models = [entry["id"] for entry in json.loads(response.read().decode()).get("data", [])]
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise ConnectionError(
            f"Could not reach the LLM judge at {endpoint}: {getattr(error, 'reason', error)}."
        ) from None
    if len(models) != 1:
        raise ValueError(f"Pass --llm_model: the server at {endpoint} lists {len(models)} models {models[:10]}.")
    return models[0]


def llm_judgements(
    client: LLMClient,
    prompts: list[str],
    completions_a: list[str],
    completions_b: list[str],
    seed: int,
    max_tokens: int = 16,
) -> list[dict[str, Any]]:
    """One verdict ('a', 'b', 'tie', 'unparseable') per pair, with A/B positions shuffled by ``seed``.

    Identical completions are a tie without asking (``judge_answer`` None): no judge can prefer
    one copy, and asking would only measure its position bias.
    """
    rng = random.Random(seed)
    judgements: list[dict[str, Any]] = []
    for prompt, answer_a, answer_b in zip(prompts, completions_a, completions_b, strict=True):
        swapped = rng.random() < 0.5  # drawn for every pair, so the order of a pair does not depend on the others
        if answer_a.strip() == answer_b.strip():
            judgements.append({"verdict": "tie", "a_shown_first": not swapped, "judge_answer": None})
            continue
        first, second = (answer_b, answer_a) if swapped else (answer_a, answer_b)
        content = JUDGE_TEMPLATE.format(
            prompt=prompt.strip(), first=first.strip() or "(empty)", second=second.strip() or "(empty)"
        )
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]
        raw = client.chat(messages, max_tokens=max_tokens)
        shown = parse_verdict(raw)
        to_run = {"A": "b", "B": "a"} if swapped else {"A": "a", "B": "b"}  # shown position -> run
        verdict = to_run.get(shown, shown)
        judgements.append({"verdict": verdict, "a_shown_first": not swapped, "judge_answer": raw})
    return judgements


# -------------------------------------------------------------------------------------------- tally


def tally(verdicts: list[str]) -> dict[str, Any]:
    counts = {verdict: verdicts.count(verdict) for verdict in VERDICTS}
    n = len(verdicts)
    win_rate = (counts["a"] + 0.5 * (counts["tie"] + counts["unparseable"])) / n if n else math.nan
    return {
        "n": n,
        "wins_a": counts["a"],
        "wins_b": counts["b"],
        "ties": counts["tie"],
        "unparseable": counts["unparseable"],
        "win_rate_a": win_rate,
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
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Per-group win rate of run A's policy over run B's (see the module docstring).

    Returns ``{"per_group": {group: counts}, "overall": counts, "mean_group_win_rate_a",
    "metadata": {...}, "pairs": [...]}`` where counts = ``{"n", "wins_a", "wins_b", "ties",
    "unparseable", "win_rate_a"}`` and each pair records group, prompt, both completions, both task
    rewards and the verdict (plus the judge's raw answer for ``llm``). With ``out``, also written as JSON.
    ``max_new_tokens`` defaults to the larger ``max_completion_length`` of the two runs (else 32).
    """
    from pgrpo.experiments.evaluation import balanced_rows, score
    from pgrpo.tasks import build_task

    if judge not in ("reward", "llm"):
        raise ValueError(f"judge must be 'reward' or 'llm', got {judge!r}.")
    if samples < 1 or num_prompts < 1:
        raise ValueError(f"num_prompts and samples must be >= 1, got {num_prompts} and {samples}.")
    if judge == "llm" and not llm_url:
        raise ValueError("The llm judge needs --llm_url (an OpenAI-compatible server, e.g. http://127.0.0.1:8000).")
    run_a, run_b = Path(run_a), Path(run_b)
    spec_a, spec_b = run_task_spec(run_a), run_task_spec(run_b)
    same_task_spec(spec_a, spec_b, run_a, run_b)
    client = None
    if judge == "llm":
        model_name = llm_model or discover_model(llm_url, api_key_env)
        client = LLMClient(llm_url, model_name, api_key_env, llm_timeout)
    if max_new_tokens is None:
        lengths = [s["max_completion_length"] for s in (spec_a, spec_b) if s["max_completion_length"]]
        max_new_tokens = int(max(lengths)) if lengths else 32

    task = build_task(spec_a["task"], seed=spec_a["task_seed"], **spec_a["task_options"])
    rows = balanced_rows(task.eval_dataset.to_list(), task.group_column, num_prompts)
    rows = [row for row in rows for _ in range(samples)]
    prompts = [row["prompt"] for row in rows]
    do_sample = samples > 1
    completions_a = generate_for_run(run_a, prompts, max_new_tokens, do_sample, seed)
    completions_b = generate_for_run(run_b, prompts, max_new_tokens, do_sample, seed)
    rewards_a = score(task, rows, completions_a)
    rewards_b = score(task, rows, completions_b)
    reward_verdicts = [reward_verdict(ra, rb) for ra, rb in zip(rewards_a, rewards_b, strict=True)]

    groups = [str(row[task.group_column]) for row in rows]
    pairs = [
        {
            "group": g,
            "prompt": p,
            "completion_a": ca,
            "completion_b": cb,
            "reward_a": ra,
            "reward_b": rb,
            "reward_verdict": rv,
        }
        for g, p, ca, cb, ra, rb, rv in zip(
            groups, prompts, completions_a, completions_b, rewards_a, rewards_b, reward_verdicts, strict=True
        )
    ]
    if client is not None:
        judgements = llm_judgements(client, prompts, completions_a, completions_b, seed, llm_max_tokens)
        for pair, judgement in zip(pairs, judgements, strict=True):
            pair.update(judgement)
    else:
        for pair in pairs:
            pair["verdict"] = pair["reward_verdict"]

    verdicts = [pair["verdict"] for pair in pairs]
    per_group = {
        group: tally([v for g, v in zip(groups, verdicts, strict=True) if g == group]) for group in sorted(set(groups))
    }
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
    if client is not None:
        parsed = [p for p in pairs if p["verdict"] != "unparseable"]
        asked = [p for p in pairs if p["judge_answer"] is not None]
        metadata.update(
            llm_url=llm_url,
            llm_endpoint=client.endpoint,
            llm_model=client.model,
            api_key_env=api_key_env,
            api_key_used=bool(os.environ.get(api_key_env)),
            llm_max_tokens=llm_max_tokens,
            llm_requests=len(asked),
            agreement_with_reward=(
                sum(p["verdict"] == p["reward_verdict"] for p in parsed) / len(parsed) if parsed else math.nan
            ),
        )
    group_rates = [counts["win_rate_a"] for counts in per_group.values()]
    results = {
        "per_group": per_group,
        "overall": tally(verdicts),
        "mean_group_win_rate_a": sum(group_rates) / len(group_rates) if group_rates else math.nan,
        "metadata": metadata,
        "pairs": pairs,
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2, default=float))
    return results


# ---------------------------------------------------------------------------------------------- CLI


def format_table(results: dict[str, Any]) -> str:
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
    if "agreement_with_reward" in meta:
        lines.append(f"LLM requests: {meta['llm_requests']} (pairs with identical completions are ties unasked)")
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
    seed: int = field(default=0, metadata={"help": "Seed of sampling and of the A/B order shown to the LLM."})
    out: str | None = field(
        default=None, metadata={"help": "Write the full results (per group, pairs, metadata) to this JSON file."}
    )


def judge_command(args: JudgeArguments) -> int:
    if not (args.run_a and args.run_b):
        raise ValueError("Give two run directories: pgrpo judge RUN_A RUN_B.")
    results = judge_runs(
        args.run_a,
        args.run_b,
        num_prompts=args.num_prompts,
        samples=args.samples,
        judge=args.judge,
        llm_url=args.llm_url,
        llm_model=args.llm_model,
        api_key_env=args.api_key_env,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        llm_max_tokens=args.llm_max_tokens,
        out=args.out,
    )
    print(format_table(results))
    if args.out:
        print(f"results: {args.out}")
    return 0


JUDGE = Command(arguments=(JudgeArguments,), run=judge_command, positional=("run_a", "run_b"))
