"""The bench's plan: each run's directory and flags from the bench, --train_options, the variant and the regime;
a flag two of them set is refused before anything runs, naming where it belongs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pgrpo.cli import main
from pgrpo.experiments.bench.plan import BenchArguments, planned_runs, record_regimes
from pgrpo.experiments.bench.regimes import PERSONALIZATION_REGIMES, REGIMES
from pgrpo.experiments.bench.variants import (
    CONDITIONING,
    PERSONALIZATION_VARIANTS,
    VARIANTS,
    frozen_reference,
    is_frozen,
    variant_flags,
)
from pgrpo.tasks.registry import check_options, find_task


def bench_args(**changes) -> BenchArguments:
    return BenchArguments(**{"out": "b", "tasks": ["personas"], "variants": ["grpo"], "regimes": ["none"], "seeds": 1,
                             "specialist_seeds": 0, **changes})  # fmt: skip


BENCH_KEYS = {  # flag the bench sets -> what the error must point to
    "task": "--tasks",
    "seed": "--seeds",
    "max_steps": "--max_steps",
    "num_generations": "--num_generations",
    "per_device_train_batch_size": "--prompts_per_step",
    "eval_prompts": "--eval_prompts",
    "run_dir": "--out",
    "save_steps": "half of --max_steps",
}


@pytest.mark.parametrize("key", list(BENCH_KEYS))
def test_a_flag_the_bench_sets_is_refused_in_train_options(key: str) -> None:
    with pytest.raises(ValueError, match=rf"--train_options sets '{key}', which the bench sets.*{BENCH_KEYS[key]}"):
        planned_runs(bench_args(train_options=json.dumps({key: 1})))


RUNNING = ["grpo", "pgrpo_ema", "dr_grpo", "pgrpo_merged", "pgrpo_random"]


@pytest.mark.parametrize(
    ("key", "variants"),
    [
        ("estimator", "grpo, pgrpo_ema, dr_grpo, pgrpo_merged, pgrpo_random"),
        ("history_decay", "pgrpo_ema"),
        ("loss_type", "dr_grpo"),
        ("group_labels", "pgrpo_merged, pgrpo_random"),
    ],
)
def test_a_flag_a_running_variant_sets_is_refused_naming_the_variants(key: str, variants: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"sets {key!r}, which variant(s) {variants} set")):
        planned_runs(bench_args(variants=RUNNING, train_options=json.dumps({key: "x"})))


def test_a_flag_only_variants_that_do_not_run_set_is_given_to_every_run() -> None:
    options = json.dumps({"group_sampling_alpha": 0.5})
    runs = planned_runs(bench_args(variants=["grpo", "pgrpo"], train_options=options))
    assert {run.flags["group_sampling_alpha"] for run in runs} == {0.5}  # balanced sampling sets it, but is not here
    with pytest.raises(ValueError, match=re.escape("which variant(s) pgrpo_balanced_sampling set")):
        planned_runs(bench_args(variants=["grpo", "pgrpo_balanced_sampling"], train_options=options))


def test_refusals_come_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    with pytest.raises(ValueError, match=r"'seed'.*--seeds"):
        main(["bench", "--out", str(out), "--regimes", "none", "--train_options", '{"seed": 3}'])
    with pytest.raises(ValueError, match=r"Unknown option\(s\) 'num_trian' \(did you mean 'num_train'\?\)"):
        main(["bench", "--out", str(out), "--regimes", "none", "--train_options", '{"task_options": {"num_trian": 5}}'])
    with pytest.raises(ValueError, match=r"Unknown regime.*'personas:nope'"):
        main(["bench", "--out", str(out), "--regimes", "personas:nope"])
    with pytest.raises(ValueError, match="Unknown variant 'pgrpo_random_random'"):
        main(["bench", "--out", str(out), "--variants", "grpo", "pgrpo_random_random"])
    assert not out.exists()


def test_regime_runs_share_the_seeds_and_carry_their_settings() -> None:
    options = {"model_name_or_path": "m", "learning_rate": 0.01, "task_options": {"num_train": 700}}
    args = bench_args(variants=["grpo", "pgrpo"], regimes=["personas:G=8", "personas:anonymous"], seeds=2,
                      prompts_per_step=3, max_steps=6, train_options=json.dumps(options))  # fmt: skip
    runs = planned_runs(args)
    labels = ("grpo", "pgrpo", "pgrpo_random", "pgrpo_balanced_sampling", "pgrpo_balanced_sampling_random")
    g8 = [f"runs/regimes/personas-G_8/{v}" for v in labels]
    anonymous = [f"runs/regimes/personas-anonymous/{v}" for v in PERSONALIZATION_VARIANTS]
    one_seed = ["runs/matrix/personas/grpo", "runs/matrix/personas/pgrpo", *g8, *anonymous]
    by_seed = [[str(run.run_dir) for run in runs if run.flags["seed"] == seed] for seed in (0, 1)]
    assert [str(run.run_dir) for run in runs] == by_seed[0] + by_seed[1]  # seed by seed (longest first within one)
    assert [sorted(dirs) for dirs in by_seed] == [sorted(f"b/{d}/seed{s}" for d in one_seed) for s in (0, 1)]
    by_dir = {str(run.run_dir): run.flags for run in runs}
    g8 = by_dir["b/runs/regimes/personas-G_8/pgrpo/seed1"]
    assert (g8["num_generations"], g8["per_device_train_batch_size"], g8["seed"]) == (8, 24, 1)
    assert (g8["estimator"], g8["learning_rate"], g8["model_name_or_path"]) == ("pgrpo", 0.01, "m")
    assert json.loads(g8["task_options"]) == {"num_train": 700}
    control = by_dir["b/runs/regimes/personas-anonymous/pgrpo_balanced_sampling_prompt_random/seed0"]
    assert json.loads(control["task_options"]) == {"num_train": 700, "anonymous": True}
    assert (control["num_generations"], control["per_device_train_batch_size"], control["save_steps"]) == (4, 12, 3)
    assert (control["estimator"], control["group_labels"], control["group_conditioning"]) == (
        "pgrpo",
        "random",
        "prompt",
    )
    argv = next(run for run in runs if str(run.run_dir) == "b/runs/matrix/personas/grpo/seed0").argv()
    assert argv[:2] == ["--run_dir", "b/runs/matrix/personas/grpo/seed0"]
    assert argv[argv.index("--disable_tqdm") + 1] == "true"
    assert json.loads(argv[argv.index("--task_options") + 1]) == {"num_train": 700}


def test_task_options_a_regime_sets_are_refused_in_train_options() -> None:
    with pytest.raises(ValueError, match=re.escape("task_options set ['anonymous'], which regime personas:anonymous")):
        planned_runs(bench_args(regimes=["personas:anonymous"], train_options='{"task_options": {"anonymous": false}}'))


def test_each_variant_has_its_random_label_control() -> None:
    assert variant_flags("pgrpo_random") == {"estimator": "pgrpo", "history": "cumulative", "group_labels": "random"}
    for name, flags in VARIANTS.items():
        assert not name.endswith("_random")
        assert variant_flags(f"{name}_random") == {**flags, "group_labels": "random"}
    with pytest.raises(ValueError, match="Unknown variant 'pgrpo_retired'"):
        variant_flags("pgrpo_retired")
    assert variant_flags("pgrpo_retired", strict=False) == {}  # a run directory of an older bench: read, not planned
    assert not is_frozen("frozen_retired") and frozen_reference("pgrpo_retired") == "frozen"


def test_regimes_keep_the_earlier_sweep_and_add_the_evidence_settings() -> None:
    assert len({regime.directory for regime in REGIMES.values()}) == len(REGIMES)
    for regime in REGIMES.values():
        check_options(find_task(regime.task), regime.task_options)  # every option exists on its task
        assert all(variant_flags(variant) for variant in regime.variants)
    # the earlier sweep's settings, same numbers: 0.4 / 0.92 * 0.5, 0.2 / 0.92 * 0.5, ... and the two minorities
    assert REGIMES["personas:minorities=25%"].task_options["shares"] == pytest.approx(
        [0.217391, 0.108696, 0.081522, 0.054348, 0.038043, 0.25, 0.25], abs=1e-12
    )
    assert REGIMES["personas:G=2"].flags == {"num_generations": 2}
    assert REGIMES["personas:reward-noise=0.2"].task_options == {"reward_noise": 0.2}
    assert REGIMES["personas:difficulty-gap"].task_options == {"sft_preference": [0.5] * 5 + [0.0, 0.0]}
    assert REGIMES["personas:one-persona=1%"].task_options["shares"][-1] == 0.01
    labels = ("grpo", "pgrpo", "pgrpo_random", "pgrpo_balanced_sampling", "pgrpo_balanced_sampling_random")
    evidence = ("personas:difficulty-gap", "personas:one-persona=1%")
    for name, regime in REGIMES.items():  # every regime separates labels from history normalisation
        if name in PERSONALIZATION_REGIMES:  # ... and the personalization regimes compare group conditioning too
            assert {"grpo", "pgrpo", "pgrpo_balanced_sampling", "grpo_prompt_random"} <= set(regime.variants), name
            continue
        extra = ("grpo_balanced_sampling", "grpo_balanced_sampling_random") if name in evidence else ()
        assert regime.variants == (*labels, *extra), name
    assert REGIMES["personas:two-users-90-10"].task_options == {"shares": [0.9, 0, 0, 0, 0, 0, 0.1]}


def test_specialists_run_for_every_group_of_every_setting_on_their_own_seeds() -> None:
    args = bench_args(tasks=["reviews"], regimes=["personas:two-users-90-10"], seeds=2, specialist_seeds=1)
    runs = {str(run.run_dir): run.flags for run in planned_runs(args)}
    specialists = sorted(name for name in runs if "/specialist_" in name)
    assert specialists == sorted(
        [f"b/runs/matrix/reviews/specialist_{rating}/seed0" for rating in range(1, 6)]
        + [f"b/runs/regimes/personas-two-users-90-10/specialist_{name}/seed0" for name in ("eleanor", "kemar")]
    )  # one seed: seed 1 has none
    kemar = runs["b/runs/regimes/personas-two-users-90-10/specialist_kemar/seed0"]
    grpo = runs["b/runs/regimes/personas-two-users-90-10/grpo/seed0"]
    assert kemar == {**grpo, "train_group": "kemar"}  # grpo's flags, on kemar's prompts alone


def test_each_seeds_runs_go_longest_first_adapters_first_and_untrained_references_last() -> None:
    args = bench_args(tasks=["tones"], variants=["frozen", "grpo", "grpo_adapter", "frozen_prompt", "pgrpo"], seeds=2,
                      specialist_seeds=1)  # fmt: skip
    runs = [str(run.run_dir).removeprefix("b/runs/matrix/tones/") for run in planned_runs(args)]
    seed0 = ["grpo_adapter", "grpo", "pgrpo", "specialist_delighted", "specialist_mixed", "specialist_disappointed",
             "frozen", "frozen_prompt"]  # fmt: skip
    assert runs == [f"{name}/seed0" for name in seed0] + [
        f"{name}/seed1" for name in ("grpo_adapter", "grpo", "pgrpo", "frozen", "frozen_prompt")
    ]  # whole seeds, in order: an interrupted bench holds whole seeds


def test_a_changed_regime_is_refused_and_its_record_kept(tmp_path: Path) -> None:
    args = bench_args(out=str(tmp_path), regimes=["personas:anonymous"])
    record_regimes(args)
    path = tmp_path / "runs/regimes/personas-anonymous/regime.json"
    assert json.loads(path.read_text())["task_options"] == {"anonymous": True}
    record_regimes(args)  # unchanged: fine
    path.write_text(json.dumps({**json.loads(path.read_text()), "task_options": {"anonymous": False}}))
    before = path.read_text()
    with pytest.raises(ValueError, match="personas:anonymous is no longer what its runs"):
        record_regimes(args)
    assert path.read_text() == before


def test_regime_variants_replace_each_regimes_own_and_tasks_none_runs_no_task_defaults() -> None:
    args = bench_args(tasks=["none"], regimes=["personas:anonymous", "personas:G=8"], regime_variants=["grpo", "pgrpo"])
    runs = [str(run.run_dir) for run in planned_runs(args)]
    assert runs == [f"b/runs/regimes/{regime}/{variant}/seed0" for regime in ("personas-anonymous", "personas-G_8")
                    for variant in ("grpo", "pgrpo")]  # fmt: skip


def test_untrained_references_take_no_step_and_keep_learning_rate_zero_under_a_bench_learning_rate() -> None:
    args = bench_args(
        tasks=["tones"], variants=["frozen", "frozen_prompt", "grpo"], train_options='{"learning_rate": 0.002}'
    )
    runs = {run.run_dir.parts[-2]: run.flags for run in planned_runs(args)}
    assert runs["frozen"]["max_steps"] == runs["frozen_prompt"]["max_steps"] == 0  # the initial policy, evaluated
    assert runs["frozen"]["learning_rate"] == runs["frozen_prompt"]["learning_rate"] == 0.0
    assert runs["frozen_prompt"]["group_conditioning"] == "prompt"
    assert runs["grpo"]["learning_rate"] == 0.002 and runs["grpo"]["max_steps"] == args.max_steps
    with pytest.raises(ValueError, match=re.escape("sets 'group_conditioning', which variant(s) frozen_prompt set")):
        planned_runs(bench_args(variants=["frozen_prompt"], train_options='{"group_conditioning": "adapter"}'))


def test_every_conditioning_variant_has_its_untrained_reference() -> None:
    assert {name: frozen_reference(name) for name in CONDITIONING} == {
        "grpo_prompt": "frozen_prompt",
        "pgrpo_balanced_sampling_prompt": "frozen_prompt",
        "grpo_adapter": "frozen",  # per-group adapters start as the identity
        "pgrpo_balanced_sampling_adapter": "frozen",
    }
    assert frozen_reference("pgrpo_balanced_sampling_prompt_random") == "frozen_prompt"
    assert {"frozen", "frozen_prompt"} <= set(PERSONALIZATION_VARIANTS) and is_frozen("frozen_prompt")
    assert not is_frozen("grpo") and not is_frozen("frozen_unknown")
