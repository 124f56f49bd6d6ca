"""Bench statistics, the bar and the report, on run directories whose outcomes differ on purpose.

The runs here are written as `pgrpo train` writes them (summary.json, metrics.jsonl, regime.json) with chosen
held-out rewards, so that each variant passes or fails the bar for a known reason; tests/experiments/test_cli.py
runs a real bench end to end.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from scipy import stats

from pgrpo.experiments.bench.bar import bar
from pgrpo.experiments.bench.plots import (
    DPI,
    SPECIALIST,
    plot_group_eval,
    plot_headline,
    plot_worst_vs_overall,
    variant_colors,
)
from pgrpo.experiments.bench.report import setting_table, write_report
from pgrpo.experiments.bench.statistics import collect, interval, smooth, steps_to, summarize, train_mix_reward

SEEDS = (0, 1, 2)
NOISE = np.array([0.0, 0.01, -0.01])  # per seed: intervals are tight but not zero-width
# setting -> (task, regime flags, None for the task's defaults, or "sweep" for a bench made before regimes)
ANONYMOUS = "personas:anonymous"
SETTINGS = {"a": ("a", None), "a:hard": ("a", {"flag": 1}), "b": ("b", None), ANONYMOUS: ("a", {"anonymous": 1}),
            "sweep: G=2": ("a", "sweep")}  # fmt: skip
# variant -> setting -> (Δ overall, Δ worst) added to grpo's on every seed. Groups g1 (worst, train share 0.2) and
# g2 (0.8); the per-group rewards are g1 = worst, g2 = 2 overall - worst, so Δ g2 = 2 Δ overall - Δ worst, and the
# train-mix reward moves by 0.2 Δ g1 + 0.8 Δ g2. Specialists: g1's is 0.2 above grpo's g1, g2's equals grpo's g2.
SERVES = (0.08, 0.16)  # worst +0.16, g2 unchanged: train mix +0.032, largest gap 0.04
EFFECTS = {
    "good": {"a": SERVES, "a:hard": (0.0, 0.0), "b": SERVES, ANONYMOUS: SERVES},  # clears the bar
    "good_random": {"a": (0.0, 0.0), "a:hard": (0.0, 0.0), "b": (0.0, 0.0), ANONYMOUS: (0.0, 0.0)},
    "costly": {"a": (0.0, 0.10), "b": (0.0, 0.10), ANONYMOUS: (0.0, 0.10)},  # g2 pays: train mix -0.06, gap 0.10
    "gappy": {"a": (0.05, 0.10), "b": (0.05, 0.10), ANONYMOUS: (0.05, 0.10)},  # g1's gap stays 0.10
    "lucky": {"a": SERVES, "a:hard": SERVES, "b": (0.0, 0.0), ANONYMOUS: SERVES, "sweep: G=2": (0.0, 0.0)},
    "lucky_random": {"a": (0.0, 0.0), "a:hard": (0.0, 0.0)},
    "labelfree": {"a": SERVES, "b": SERVES, ANONYMOUS: SERVES},  # its random-label control does as well
    "labelfree_random": {"a": SERVES, "b": SERVES, ANONYMOUS: SERVES},
    "named_only": {"a": SERVES, "b": SERVES, ANONYMOUS: (0.0, 0.0)},  # fails users the prompt does not tell apart
    "named_only_random": {"a": (0.0, 0.0), "b": (0.0, 0.0)},
}
HACKER = "hacker"  # serves like good, but its text is degenerate: perplexity 1.5x its initial policy's
EFFECTS[HACKER] = EFFECTS["good"]
EFFECTS[HACKER + "_random"] = EFFECTS["good_random"]
PERPLEXITY = {HACKER: 13.5}  # 9.0 for the others and for every initial policy
FROZEN_BELOW_GRPO = (0.05, 0.10)  # the untrained policy: (overall, worst) this far below grpo's
SPECIALIST_GAIN = {"g1": 0.2, "g2": 0.0}
TRAIN_SHARES = {"g1": 0.2, "g2": 0.8}


def grpo_rewards(seed: int) -> tuple[float, float]:
    return 0.5 + 0.05 * seed, 0.2 + 0.03 * seed  # overall, worst group: seeds differ, pairing removes it


def write_run(
    run_dir: Path, task: str, variant: str, seed: int, overall: float, worst: float, per_group: dict | None = None
) -> None:
    run_dir.mkdir(parents=True)
    per_group = per_group or {"g1": worst, "g2": 2 * overall - worst}
    evaluation = {"reward_sampled": overall, "worst_group_sampled": worst, "reward_greedy": overall,
                  "per_group_sampled": per_group, "per_group_prompts": dict.fromkeys(per_group, 30),
                  "train_shares": TRAIN_SHARES, "kl_to_initial": 0.1, "perplexity": 9.0,
                  "perplexity_reference_text": PERPLEXITY.get(variant, 9.0),
                  "perplexity_reference_text_initial": 9.0}  # fmt: skip
    summary = {"task": task, "estimator": variant, "group_labels": "random" if "random" in variant else "task",
               "seed": seed, "eval": evaluation, "final_train_reward": overall, "seconds_per_step": 0.1}  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary))
    lines = [{"step": step, "loss": 0.0, "reward": overall * step / 4, "group/g1/reward_running": worst * step / 4,
              "group/worst_reward_running": worst * step / 4} for step in range(1, 5)]  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    for setting, (task, regime) in SETTINGS.items():
        base = root / "runs" / ("matrix" if regime is None else "regimes") / setting.replace(":", "-")
        if regime == "sweep":  # the layout of benches made before regimes
            base = root / "runs/sweep/r0"
            base.mkdir(parents=True)
            (base / "regime.txt").write_text(setting.removeprefix("sweep: "))
        elif regime is not None:
            base.mkdir(parents=True)
            (base / "regime.json").write_text(json.dumps({"task": task, "name": setting, "task_options": {},
                                                          "flags": regime, "variants": []}))  # fmt: skip
        for seed in SEEDS:
            overall, worst = grpo_rewards(seed)
            write_run(base / "grpo" / f"seed{seed}", task, "grpo", seed, overall, worst)
            below = np.asarray(FROZEN_BELOW_GRPO)
            write_run(base / "frozen" / f"seed{seed}", task, "frozen", seed, *(np.array([overall, worst]) - below))
            for variant, effects in EFFECTS.items():
                if setting in effects:
                    d_overall, d_worst = effects[setting]
                    write_run(base / variant / f"seed{seed}", task, variant, seed, overall + d_overall + NOISE[seed],
                              worst + d_worst + NOISE[seed])  # fmt: skip
            grpo_groups = {"g1": worst, "g2": 2 * overall - worst}
            for group, gain in SPECIALIST_GAIN.items():
                reward = grpo_groups[group] + gain + NOISE[seed]
                write_run(base / f"specialist_{group}" / f"seed{seed}", task, "grpo", seed, reward, reward,
                          {group: reward})  # fmt: skip
    return root


def t_interval(values: np.ndarray) -> tuple[float, float]:
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return (low + high) / 2, (high - low) / 2


def test_interval_is_the_t_interval_and_skips_missing_values() -> None:
    values = np.array([0.3, 0.9, 0.4, 0.75])
    assert interval([*values, None, math.nan]) == pytest.approx(t_interval(values))
    assert interval([5.0])[0] == 5.0 and math.isnan(interval([5.0])[1])
    assert all(math.isnan(v) for v in interval([None]))


def test_smoothing_skips_steps_where_a_group_was_absent() -> None:
    curve = [1.0, None, 3.0, None, None, None, None, 8.0]
    np.testing.assert_array_equal(smooth(curve, 3), [1.0, 1.0, 2.0, 3.0, 3.0, np.nan, np.nan, 8.0])
    assert steps_to([0.0, 0.1, 1.0, 1.0, 1.0, 1.0, 1.0], 0.5) == 4.0  # smoothed over 5 steps: 2.1 / 4 >= 0.5
    assert math.isnan(steps_to([0.0, 0.1], 0.9))


def test_differences_pair_the_same_seed_and_skip_unpaired_ones() -> None:
    def run(seed: int, value: float) -> dict:
        ev = {"reward_sampled": value, "worst_group_sampled": value / 2, "per_group_sampled": {"x": value}}
        return {"seed": seed, "eval": ev, "curve": [value] * 5, "final_train_reward": value, "seconds_per_step": 1.0}

    grpo = [run(2, 5.0), run(0, 1.0)]  # other order, and no seed 1
    pgrpo = [run(0, 1.5), run(1, 9.0), run(2, 5.2)]
    control = [run(0, 1.0), run(1, 8.0)]
    table = summarize({"t": {"grpo": grpo, "pgrpo": pgrpo, "pgrpo_random": control}})["t"]
    assert table["pgrpo"]["eval reward (sampled) - grpo"] == pytest.approx(t_interval(np.array([0.5, 0.2])))
    assert table["pgrpo"]["eval worst group (sampled) - random labels"] == pytest.approx(
        t_interval(np.array([0.25, 0.5]))
    )
    assert table["pgrpo"]["eval reward (sampled)"] == pytest.approx(t_interval(np.array([1.5, 9.0, 5.2])))
    assert table["pgrpo"]["per_group_eval"]["x"] == pytest.approx(t_interval(np.array([1.5, 9.0, 5.2])))
    assert "eval reward (sampled) - random labels" not in table["grpo"]


def test_the_bar_passes_only_the_variant_that_personalizes_without_a_trade_off(bench_dir: Path) -> None:
    settings = collect(bench_dir / "runs")
    assert {name: (s.task, s.kind) for name, s in settings.items()} == {
        "a": ("a", "task"), "a:hard": ("a", "regime"), "b": ("b", "task"), ANONYMOUS: ("a", "regime"),
        "sweep: G=2": ("a", "sweep"),
    }  # fmt: skip
    verdicts = bar(summarize({name: s.runs for name, s in settings.items()}), settings)
    # grpo, the random-label controls and the specialists are no candidates
    assert set(verdicts) == {"good", "costly", "gappy", "lucky", "labelfree", "named_only", HACKER}
    assert verdicts["good"]["tasks served"] == ["a", "b"] and verdicts["good"]["anonymous served"]
    assert verdicts["good"]["beats random labels"] == ["a", "b"] and verdicts["good"]["met"]
    assert verdicts["good"]["rule"] == "project"  # the bench ran personas:anonymous
    rest = {"RL share of worst group > 0": True, "capability kept": True}
    costly = verdicts["costly"]["conditions"]["a"]
    assert costly == {"worst group > grpo": True, "train mix not lower": False, "gap <= 0.05": False, **rest}
    assert verdicts["gappy"]["conditions"]["b"] == {"worst group > grpo": True, "train mix not lower": True,
                                                     "gap <= 0.05": False, **rest}  # fmt: skip
    assert verdicts[HACKER]["conditions"]["a"] == {**verdicts["good"]["conditions"]["a"], "capability kept": False}
    assert verdicts[HACKER]["serves"] == [] and not verdicts[HACKER]["met"]
    assert not verdicts["costly"]["met"] and not verdicts["gappy"]["met"]
    assert verdicts["lucky"]["tasks served"] == ["a"] and verdicts["lucky"]["serves"] == ["a", "a:hard", ANONYMOUS]
    assert not verdicts["lucky"]["met"]  # a regime is one more setting of its task, not another task
    assert verdicts["labelfree"]["tasks served"] == ["a", "b"] and verdicts["labelfree"]["beats random labels"] == []
    assert not verdicts["labelfree"]["met"]
    assert verdicts["named_only"]["tasks served"] == ["a", "b"] and not verdicts["named_only"]["anonymous served"]
    assert not verdicts["named_only"]["met"]


def test_personalization_gap_is_the_specialists_reward_minus_the_variants_paired_by_seed() -> None:
    def run(seed: int, per_group: dict) -> dict:
        ev = {"reward_sampled": 0.5, "worst_group_sampled": 0.1, "per_group_sampled": per_group}
        return {"seed": seed, "eval": ev, "curve": [0.5] * 5, "final_train_reward": 0.5, "seconds_per_step": 1.0}

    shared = [run(0, {"x": 0.2, "y": 0.9}), run(1, {"x": 0.4, "y": 0.7}), run(2, {"x": 0.3, "y": 0.8})]
    specialist_x = [run(1, {"x": 0.9}), run(0, {"x": 0.5})]  # fewer seeds, other order: paired on seeds 0 and 1
    specialist_y = [run(0, {"y": 0.8}), run(1, {"y": 0.8})]
    table = summarize({"t": {"v": shared, "specialist_x": specialist_x, "specialist_y": specialist_y}})["t"]
    gaps = table["v"]["personalization gap"]
    assert gaps["x"] == pytest.approx(t_interval(np.array([0.5 - 0.2, 0.9 - 0.4])))
    assert gaps["y"] == pytest.approx(t_interval(np.array([0.8 - 0.9, 0.8 - 0.7])))
    assert table["v"]["personalization gap max"] == pytest.approx(gaps["x"])  # the larger mean gap
    assert "personalization gap" not in table["specialist_x"]


def test_report_writes_results_tables_and_figures(bench_dir: Path) -> None:
    report = write_report(bench_dir, "pgrpo bench --out x").read_text()
    results = json.loads((bench_dir / "results.json").read_text())
    assert set(results) == {"a", "a:hard", "b", ANONYMOUS, "sweep: G=2", "bar"} and results["bar"]["good"]["met"]
    row = results["b"]["good"]
    assert row["eval worst group (sampled) - grpo"] == pytest.approx(t_interval(0.16 + NOISE))
    assert row["eval worst group (sampled) - random labels"] == pytest.approx((0.16, 0.0), abs=1e-12)  # same noise
    assert row["eval reward (sampled) - grpo"] == pytest.approx(t_interval(0.08 + NOISE))
    assert row["eval train mix - grpo"] == pytest.approx(t_interval(0.032 + NOISE))  # 0.2 * 0.16 + 0.8 * 0
    assert row["personalization gap max"] == pytest.approx((0.04, 0.0), abs=1e-12)  # g1: 0.2 - 0.16, same noise
    assert set(results["b"]["specialist_g1"]["per_group_eval"]) == {"g1"}  # specialists are rows of their own
    assert set(row["per_group_eval"]) == {"g1", "g2"} and results["b"]["grpo"]["seeds"] == 3
    assert f"| good | a, b | yes | a, b | **yes** | a, {ANONYMOUS}, b | a:hard: worst group > grpo" in report
    assert "| costly | none | no | none | no | none | a: train mix not lower, gap <= 0.05;" in report
    assert f"| {HACKER} | none | no | a, b | no | none | a: capability kept;" in report
    assert row["rl share worst group"] == pytest.approx(t_interval(0.16 + 0.10 + NOISE))  # minus frozen's, per seed
    assert row["perplexity ratio to initial"] == pytest.approx((1.0, 0.0))
    assert results["b"][HACKER]["perplexity ratio to initial"] == pytest.approx((1.5, 0.0))
    assert "| good | 0.04 ± 0.00 | 0.00 ± 0.00 | 0.040 ± 0.000 |" in report  # gap per group, largest
    assert "| specialist_g1 |" not in report  # specialists are the reference, not variants in the tables
    assert 'Regime of `a`: flags `{"flag": 1}`.' in report and "Held-out prompts per group: g1 30, g2 30." in report
    assert report.index("### a\n") < report.index("### a:hard\n") < report.index("### sweep: G=2\n")
    assert report.index("### sweep: G=2\n") < report.index("## b\n")
    for figure in ("worst_vs_overall.png", "regimes.png", "groups_a.png", "groups_b.png", "curves_a-hard.png"):
        assert (bench_dir / figure).stat().st_size > 10_000, figure
        assert f"]({figure})" in report


def test_report_takes_the_train_shares_recorded_in_eval_json(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs/matrix/a/grpo/seed0"
    write_run(run_dir, "a", "grpo", 0, 0.5, 0.2)
    (run_dir / "config.yaml").write_text("run: {task: no_such_task}\n")  # rebuilding this task would fail
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["eval"]["train_shares"] = {"g1": 0.25, "g2": 0.75}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run,) = collect(tmp_path / "runs")["a"].runs["grpo"]
    assert run["train_shares"] == {"g1": 0.25, "g2": 0.75}
    assert train_mix_reward(run) == pytest.approx(0.25 * 0.2 + 0.75 * 0.8)


def test_training_curves_are_the_running_rewards_the_trainer_logs(tmp_path: Path) -> None:
    write_run(tmp_path / "runs/matrix/a/grpo/seed0", "a", "grpo", 0, 0.5, 0.2)
    (run,) = collect(tmp_path / "runs")["a"].runs["grpo"]
    assert run["worst_curve"] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert run["group_curves"] == {"g1": pytest.approx([0.05, 0.1, 0.15, 0.2])}


def test_train_mix_reward_weighs_the_groups_by_their_train_shares() -> None:
    run = {"eval": {"per_group_sampled": {"big": 0.8, "small": 0.2}}, "train_shares": {"big": 0.9, "small": 0.1}}
    assert train_mix_reward(run) == pytest.approx(0.9 * 0.8 + 0.1 * 0.2)  # vs 0.5 for the balanced held-out mean
    run["eval"]["per_group_sampled"]["unknown"] = 0.0  # a group without a train share weighs nothing
    assert train_mix_reward(run) == pytest.approx(0.74)
    assert train_mix_reward({"eval": {"per_group_sampled": {"a": 1.0}}, "train_shares": {}}) is None


def test_a_bench_without_grpo_has_no_comparison_figures_not_even_stale_ones(tmp_path: Path) -> None:
    for seed in SEEDS:
        write_run(tmp_path / "runs/matrix/a/pgrpo" / f"seed{seed}", "a", "pgrpo", seed, *grpo_rewards(seed))
    stale = ("headline.png", "worst_vs_overall.png", "regimes.png")
    for figure in stale:  # left by a report of the same directory when it still held grpo runs
        (tmp_path / figure).write_bytes(b"old")
    report = write_report(tmp_path).read_text()
    for figure in stale:
        assert not (tmp_path / figure).exists() and figure not in report
    assert (tmp_path / "groups_a.png").stat().st_size > 10_000 and "](groups_a.png)" in report


def test_rl_share_is_measured_from_the_untrained_policy_told_the_same() -> None:
    def run(seed: int, worst: float) -> dict:
        ev = {"reward_sampled": worst, "worst_group_sampled": worst, "per_group_sampled": {"x": worst}}
        return {"seed": seed, "eval": ev, "curve": [worst] * 5, "final_train_reward": worst, "seconds_per_step": 1.0}

    runs = {
        "frozen": [run(0, 0.10), run(1, 0.20)],
        "frozen_prompt": [run(0, 0.40), run(1, 0.50)],  # the description alone lifts the worst group by 0.3
        "grpo": [run(0, 0.30), run(1, 0.35)],
        "pgrpo_balanced_sampling_prompt": [run(0, 0.45), run(1, 0.60)],
        "pgrpo_balanced_sampling_adapter": [run(1, 0.30), run(0, 0.25)],  # adapters start as the identity
    }
    table = summarize({"t": runs})["t"]
    assert table["pgrpo_balanced_sampling_prompt"]["rl share worst group"] == pytest.approx(
        t_interval(np.array([0.05, 0.10]))
    )
    assert table["pgrpo_balanced_sampling_adapter"]["rl share worst group"] == pytest.approx(
        t_interval(np.array([0.15, 0.10]))
    )
    assert table["grpo"]["rl share worst group"] == pytest.approx(t_interval(np.array([0.20, 0.15])))
    assert "rl share worst group" not in table["frozen_prompt"]  # the references have none


def test_conditioning_share_is_measured_from_the_same_training_without_it() -> None:
    def run(seed: int, worst: float, other: float) -> dict:
        per_group = {"x": worst, "y": other}  # train shares 1:3
        ev = {"reward_sampled": (worst + other) / 2, "worst_group_sampled": worst, "per_group_sampled": per_group}
        return {"seed": seed, "eval": ev, "curve": [worst] * 5, "final_train_reward": worst, "seconds_per_step": 1.0,
                "train_shares": {"x": 0.25, "y": 0.75}}  # fmt: skip

    runs = {
        "frozen": [run(0, 0.10, 0.50), run(1, 0.20, 0.60)],
        "frozen_prompt": [run(0, 0.40, 0.40), run(1, 0.45, 0.60)],
        "grpo": [run(0, 0.30, 0.80), run(1, 0.35, 0.90)],
        "pgrpo_balanced_sampling": [run(1, 0.40, 0.70), run(0, 0.35, 0.75)],
        "pgrpo_balanced_sampling_prompt": [run(0, 0.45, 0.85), run(1, 0.60, 0.70)],
        "pgrpo_balanced_sampling_adapter": [run(0, 0.25, 0.75)],  # one seed: a mean, no interval
    }
    table = summarize({"t": runs})["t"]
    prompt = table["pgrpo_balanced_sampling_prompt"]  # minus pgrpo_balanced_sampling, seed by seed
    assert prompt["conditioning share worst group"] == pytest.approx(t_interval(np.array([0.10, 0.20])))
    mix = np.array([0.25 * 0.10 + 0.75 * 0.10, 0.25 * 0.20 + 0.75 * 0.0])
    assert prompt["conditioning share train mix"] == pytest.approx(t_interval(mix))
    assert table["frozen_prompt"]["conditioning share worst group"] == pytest.approx(t_interval(np.array([0.3, 0.25])))
    adapter = table["pgrpo_balanced_sampling_adapter"]["conditioning share worst group"]
    assert adapter[0] == pytest.approx(-0.10) and math.isnan(adapter[1])
    for variant in ("frozen", "grpo", "pgrpo_balanced_sampling"):  # nothing told: no conditioning share
        assert "conditioning share worst group" not in table[variant]


def test_without_the_anonymous_regime_a_variant_must_serve_every_setting_that_ran(bench_dir: Path) -> None:
    settings = {name: s for name, s in collect(bench_dir / "runs").items() if name in ("a", "b")}
    verdicts = bar(summarize({name: s.runs for name, s in settings.items()}), settings)
    assert verdicts["good"]["rule"] == "every setting" and verdicts["good"]["met"]
    assert verdicts["named_only"]["met"]  # served a and b; the users the prompt does not tell apart are not here
    assert not verdicts["lucky"]["met"] and verdicts["lucky"]["serves"] == ["a"]
    report_dir = bench_dir / "two_settings"
    (report_dir / "runs/matrix").mkdir(parents=True)
    for name in ("a", "b"):
        (report_dir / "runs/matrix" / name).symlink_to(bench_dir / "runs/matrix" / name)
    report = write_report(report_dir).read_text()
    assert "It clears the bar when it serves every setting of this bench." in report
    assert "| good | **yes** | a, b | none |" in report


def test_a_group_without_any_finite_reward_leaves_its_seed_out_of_that_groups_interval(tmp_path: Path) -> None:
    """As `pgrpo train` writes a run whose reward was NaN for every completion of g1: eval.json's g1 and worst group
    are NaN (json's NaN) and TRL logged the train reward as null."""
    for seed in SEEDS:
        write_run(tmp_path / "runs/matrix/a/grpo" / f"seed{seed}", "a", "grpo", seed, *grpo_rewards(seed))
        broken = seed == 0
        per_group = {"g1": math.nan if broken else 0.3, "g2": 0.6}
        run_dir = tmp_path / "runs/matrix/a/pgrpo" / f"seed{seed}"
        write_run(run_dir, "a", "pgrpo", seed, 0.6 if broken else 0.45, math.nan if broken else 0.3, per_group)
        if broken:
            lines = [{"step": step, "loss": 0.0, "reward": None} for step in range(1, 5)]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = write_report(tmp_path).read_text()
    row = json.loads((tmp_path / "results.json").read_text())["a"]["pgrpo"]
    assert row["per_group_eval"]["g1"] == pytest.approx((0.3, 0.0))  # seeds 1 and 2; seed 0 has no g1 mean
    assert row["eval worst group (sampled)"] == pytest.approx((0.3, 0.0))
    assert "| pgrpo |" in report


def test_steps_to_90_percent_of_grpo_are_a_median_and_range_and_say_how_many_seeds_reached_it() -> None:
    """Two seeds reaching grpo's level at steps 1 and 40 once read "20.5 ± 247.8" (a t-interval on two seeds)."""

    def run(seed: int, curve: list[float]) -> dict:
        ev = {"reward_sampled": 0.5, "worst_group_sampled": 0.5, "per_group_sampled": {"x": 0.5}}
        return {"seed": seed, "eval": ev, "curve": curve, "final_train_reward": 0.5, "seconds_per_step": 1.0}

    at_once, late, never = [1.0] * 40, [0.0] * 35 + [1.0] * 5, [0.5] * 40  # threshold 0.9 x grpo's 1.0
    runs = {"grpo": [run(0, at_once), run(1, at_once)], "v": [run(0, at_once), run(1, late)],
            "half": [run(0, at_once), run(1, never)], "none": [run(0, never), run(1, never)]}  # fmt: skip
    rows = summarize({"t": runs})["t"]
    assert rows["v"]["steps to 90% of grpo final"] == {"median": 20.5, "min": 1, "max": 40, "reached": 2, "seeds": 2}
    steps = setting_table(rows)["steps to 90% grpo, median (range)"].to_dict()
    assert steps == {"grpo": "1", "v": "20.5 (1–40)", "half": "1 in 1 of 2 seeds", "none": "never"}


def single_task_bench(bench_dir: Path) -> Path:
    """A bench of one task at its defaults (as a user's own task is): the fixture's task a alone."""
    report_dir = bench_dir / "one_task"
    if not report_dir.exists():
        (report_dir / "runs/matrix").mkdir(parents=True)
        (report_dir / "runs/matrix/a").symlink_to(bench_dir / "runs/matrix/a")
    return report_dir


def test_a_bench_of_one_task_says_which_variants_serve_it_and_draws_no_regimes(bench_dir: Path) -> None:
    report_dir = single_task_bench(bench_dir)
    (report_dir / "regimes.png").write_bytes(b"old")  # left by an earlier report
    report = write_report(report_dir).read_text()
    assert "It clears the bar when it serves every setting of this bench." in report
    assert ANONYMOUS not in report and "need 2" not in report  # the project's bar asks what one task cannot meet
    assert "| good | **yes** | a | none |" in report and "| costly | no | none | a: train mix not lower" in report
    section = report[report.index("### a\n") :]
    assert "Served (all five conditions of the bar) by: good, labelfree, lucky, named_only." in section
    assert (report_dir / "headline.png").stat().st_size > 10_000 and "](headline.png)" in report
    assert (report_dir / "worst_vs_overall.png").stat().st_size > 10_000
    assert not (report_dir / "regimes.png").exists() and "regimes.png" not in report  # it would repeat the headline


def text_problems(figure: Figure) -> list[str]:
    """Texts drawn (at the report's dpi) outside the figure, and number tick labels that overlap their neighbours."""
    FigureCanvasAgg(figure)
    figure.set_dpi(DPI)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    off_view = set()  # labels of ticks outside the axis limits are not drawn
    for ax in figure.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            off_view |= {
                tick.label1 for tick in axis.get_major_ticks() if not min(limits) <= tick.get_loc() <= max(limits)
            }
    problems = []
    for text in figure.findobj(Text):
        box = text.get_window_extent(renderer)
        inside = box.x0 >= -1 and box.y0 >= -1 and box.x1 <= figure.bbox.x1 + 1 and box.y1 <= figure.bbox.y1 + 1
        if text.get_visible() and text.get_text().strip() and text not in off_view and not inside:
            problems.append(f"clipped: {text.get_text()!r}")
    for ax in figure.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text() and t not in off_view]
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda box: box.x0)
        problems += [
            f"x ticks overlap: {[t.get_text() for t in labels]}" for a, b in itertools.pairwise(boxes) if a.x1 > b.x0
        ]
    return problems


def test_comparison_figures_of_one_task_have_no_clipped_text_and_no_overlapping_ticks() -> None:
    """One task (a narrow panel), long variant names and wide intervals: once "0.000.25" and a cut-off title."""
    worst, overall = "eval worst group (sampled) - grpo", "eval reward (sampled) - grpo"
    options = ["pgrpo", "pgrpo_balanced_sampling", "pgrpo_balanced_sampling_prompt", "pgrpo_balanced_sampling_adapter"]
    rng = np.random.default_rng(0)
    rows = {variant: {worst: (rng.uniform(-0.3, 0.4), rng.uniform(0.05, 0.5)),
                      overall: (rng.uniform(-0.2, 0.3), rng.uniform(0.05, 0.4))}
            for variant in [*options, *(o + "_random" for o in options), "frozen", "frozen_prompt"]}  # fmt: skip
    table = {"my_task.py:build": {"grpo": {worst: (0.0, 0.0), overall: (0.0, 0.0)}, **rows}}
    colors = variant_colors(list(table["my_task.py:build"]))
    for figure in (plot_headline(table, list(table), colors), plot_worst_vs_overall(table, colors)):
        assert figure is not None and text_problems(figure) == []


def test_the_per_group_figure_marks_each_groups_specialist(bench_dir: Path) -> None:
    settings = collect(bench_dir / "runs")
    rows = summarize({"a": settings["a"].runs})["a"]
    figure = plot_group_eval({"a": rows}, variant_colors(sorted(rows)), "a: held-out reward per group")
    (ax,) = figure.axes
    (marks,) = [line for line in ax.get_lines() if line.get_label() == SPECIALIST]
    # g1's specialist: grpo's g1 (its worst group, mean 0.23 over seeds) + 0.2; g2's: grpo's g2 (2 x 0.55 - 0.23)
    assert list(marks.get_xdata()) == [0, 1] and list(marks.get_ydata()) == pytest.approx([0.43, 0.87])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["g1", "g2"]
    assert "specialist_g1" not in {line.get_label() for line in ax.get_lines()}  # not drawn as a variant
    assert text_problems(figure) == []
