"""Launching the toy run (``tests.reliability.toy_train``) in fresh processes, and reading what it leaves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pgrpo.trainer.trainer import STATS_FILE
from tests.core.reference import advantage_reference, history_reference, worst_group_reference

NUM_GENERATIONS = 4  # toy_train's num_generations
REPO = Path(__file__).resolve().parents[2]
TOY_TRAIN = "tests.reliability.toy_train"


def script_env() -> dict[str, str]:
    """Environment for a child run: offline, one thread per process, the repository importable."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        DS_ACCELERATOR="cpu",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return env


def toy_train_command(model_dir: str, output_dir: Path, *options: object) -> list[str]:
    """``python -m tests.reliability.toy_train`` with the given options."""
    return [
        sys.executable,
        "-m",
        TOY_TRAIN,
        "--model-dir",
        model_dir,
        "--output-dir",
        str(output_dir),
        *map(str, options),
    ]


def torchrun_command(nproc: int, model_dir: str, output_dir: Path, *options: object) -> list[str]:
    """The same run under ``torchrun --standalone --nproc_per_node nproc`` (CPU: gloo)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return launcher + toy_train_command(model_dir, output_dir, *options)[1:]


def run_checked(command: list[str], log: Path, timeout: float = 300) -> None:
    """Run ``command`` to completion (output in ``log``); fail with the log's tail if it does not exit 0."""
    with log.open("w") as out:
        process = subprocess.run(
            command, cwd=REPO, env=script_env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    assert process.returncode == 0, f"{' '.join(command)} exited {process.returncode}:\n{tail(log)}"


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def checkpoint_step(checkpoint: Path) -> int:
    return int(re.fullmatch(r"checkpoint-(\d+)", checkpoint.name).group(1))


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that has its ``trainer_state.json`` (transformers writes that file last)."""
    complete = [path.parent for path in output_dir.glob("checkpoint-*/trainer_state.json")]
    return max(complete, key=checkpoint_step, default=None)


def model_parameters(directory: Path) -> dict[str, torch.Tensor]:
    """The saved shared weights, plus each group's adapter (keys ``<name>/...``) with adapter conditioning."""
    parameters = load_file(directory / "model.safetensors")
    for path in sorted(directory.glob("group_adapters/*/adapter_model.safetensors")):
        parameters |= {f"{path.parent.name}/{key}": value for key, value in load_file(path).items()}
    return parameters


def accelerate_command(config: Path, nproc: int, model_dir: str, output_dir: Path, *options: object) -> list[str]:
    """The same run under ``accelerate launch --config_file config --num_processes nproc`` in fp32."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    launcher += ["--num_processes", str(nproc), "--mixed_precision", "no"]
    return launcher + toy_train_command(model_dir, output_dir, *options)[1:]


def read_dumps(dump_dir: Path, num_processes: int) -> list[list[dict]]:
    """``records[rank][batch]``: what each rank wrote after each generation batch (see ``toy_train``)."""
    return [
        [json.loads(path.read_text()) for path in sorted((dump_dir / f"rank{rank}").glob("batch*.json"))]
        for rank in range(num_processes)
    ]


def check_consistent_run(dump_dir: Path, output_dir: Path, num_processes: int, num_batches: int) -> list[list[dict]]:
    """Every rank held the same statistics after every batch and its slice of the same advantages, and those equal
    the NumPy reference (``tests/core/reference.py``) fed the gathered rewards and labels of every batch so far.
    Returns the records (``records[rank][batch]``)."""
    records = read_dumps(dump_dir, num_processes)
    assert [len(r) for r in records] == [num_batches] * num_processes
    seen: list[tuple[np.ndarray, list]] = []  # (rewards, labels) of every batch so far
    for batch, per_rank in enumerate(zip(*records, strict=True)):
        main = per_rank[0]
        assert main["num_processes"] == num_processes
        for rank, record in enumerate(per_rank):
            assert record["process_index"] == rank
            for key in ("state", "rewards_per_func", "groups", "advantages", "parameter_sum"):
                assert record[key] == main[key], f"batch {batch}: rank {rank} differs from rank 0 in {key}"
        local = [value for record in per_rank for value in record["local_advantages"]]
        assert local == [float(np.float32(a)) for a in main["advantages"]], f"batch {batch}: slices"

        per_func = np.array(main["rewards_per_func"], dtype=np.float64)
        weighted = per_func * np.array(main["reward_weights"])
        rewards = np.where(np.isnan(per_func).all(axis=1), np.nan, np.nansum(weighted, axis=1))  # TRL's rule
        seen.append((rewards, main["groups"]))
        seen_groups = [g for _, groups in seen for g in groups]
        stats = history_reference(np.concatenate([r for r, _ in seen]), seen_groups, "cumulative")
        mean, std, ready = (np.array([stats[g][i] for g in main["groups"]]) for i in (1, 2, 0))
        prompt_index = np.arange(len(rewards)) // NUM_GENERATIONS
        expected = advantage_reference("pgrpo", rewards, prompt_index, mean, std, ready >= 2, 1e-4)
        options = main["state"]["options"]
        if options["weighting"] == "worst_group":
            weights, _ = worst_group_reference(
                seen, options["weight_step"], options["weight_floor"], options["weight_ceiling"], options["eps"]
            )
            expected = expected * weights[-1]
        np.testing.assert_allclose(main["advantages"], expected, rtol=1e-9, atol=1e-12, err_msg=f"batch {batch}")
        tracker = main["state"]["tracker"]
        for label, (count, mu, _) in stats.items():
            index = tracker["labels"].index(label)
            assert (tracker["count"][index], tracker["mean"][index]) == pytest.approx((count, mu), rel=1e-12)
    final = json.loads((output_dir / "final" / STATS_FILE).read_text())
    assert set(final.pop("sampling")) == {"alpha"} and final == records[0][-1]["state"]
    assert {g for _, groups in seen for g in groups} == {"big", "small"}
    return records
