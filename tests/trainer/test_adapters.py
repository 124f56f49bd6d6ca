"""Adapter group conditioning: per-row routing against PEFT's own single-adapter forward, training, saving, loading.

References are independent of our routing: PEFT's LoRA forward with one group's adapter made active on the layers
(``set_adapter``), a fresh model loaded from disk for the shared weights, and the labels TRL put in each batch.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from pgrpo.models.adapters import ADAPTERS_DIR, GroupAdapters, route_groups
from pgrpo.models.serving import load_group_policy, load_routed_policy
from pgrpo.testing import CPU_ARGS, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
from pgrpo.trainer.adapters import ROWS_KEY

LABELS = ["a", "b", "c"]


def build(model_dir: str, peft: bool) -> tuple[torch.nn.Module, GroupAdapters]:
    """The toy model (or a PeftModel with a non-zero LoRA "default") with group adapters whose B is non-zero."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if peft:
        from peft import get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapters = GroupAdapters(model, LABELS, r=4, alpha=8)
    randomize_group_adapters(adapters)
    return model, adapters


def randomize_group_adapters(adapters: GroupAdapters, generator: torch.Generator | None = None) -> None:
    """Non-zero B (PEFT initializes it to 0), so that a wrongly routed row would show; drawn from ``generator``
    (default: torch's global one), so that two models given generators of the same seed get the same adapters."""
    with torch.no_grad():
        for index in range(len(adapters.names)):
            for key, parameter in adapters.parameters(index).items():
                if ".lora_B." in key:
                    parameter.normal_(std=0.5, generator=generator)


def single_adapter_forward(model, adapters: GroupAdapters, label, input_ids: torch.Tensor) -> torch.Tensor:
    """PEFT's own forward with ``label``'s adapter active next to the shared one(s) (no routing)."""
    assert adapters.router.rows is None
    previous = {path: list(layer.active_adapters) for path, layer in adapters.layers.items()}
    if label is not None:
        for path, layer in adapters.layers.items():
            layer.set_adapter(previous[path] + [adapters.names[adapters.labels.labels.index(label)]])
    try:
        return model(input_ids=input_ids).logits
    finally:
        for path, layer in adapters.layers.items():
            layer.set_adapter(previous[path])
        adapters.require_grad()


@pytest.mark.parametrize("peft", [False, True], ids=["full", "peft"])
def test_mixed_batch_equals_each_rows_own_adapter_in_logits_and_gradients(toy_model_dir: str, peft: bool) -> None:
    model, adapters = build(toy_model_dir, peft)
    labels = ["a", "c", None, "a", "b", "unseen"]
    input_ids = torch.randint(3, 13, (len(labels), 7), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(len(labels), 7, model.config.vocab_size, generator=torch.Generator().manual_seed(2))
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    with route_groups(model, labels):
        routed = model(input_ids=input_ids).logits
    (routed * weights).sum().backward()
    routed_grads = {name: p.grad.clone() for name, p in trainable}
    model.zero_grad()

    for row, label in enumerate(labels):
        expected = single_adapter_forward(model, adapters, label if label in LABELS else None, input_ids[row : row + 1])
        torch.testing.assert_close(routed[row], expected[0], rtol=1e-5, atol=1e-5)
        (expected * weights[row : row + 1]).sum().backward()  # gradients accumulate over the rows
    for name, parameter in trainable:
        torch.testing.assert_close(routed_grads[name], parameter.grad, rtol=1e-4, atol=1e-5, msg=name)
    group_grads = {adapters.names[i]: routed_grads[n] for n, _ in trainable for i in range(3) if adapters.names[i] in n}
    assert all(grad.abs().sum() > 0 for grad in group_grads.values())  # every present group got a gradient


@pytest.mark.parametrize("peft", [False, True], ids=["full", "peft"])
def test_rows_without_an_adapter_get_exactly_the_shared_model(toy_model_dir: str, peft: bool) -> None:
    model, _ = build(toy_model_dir, peft)
    input_ids = torch.randint(3, 13, (3, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with route_groups(model, [None, "unseen", 7]):
            routed = model(input_ids=input_ids).logits
        unrouted = model(input_ids=input_ids).logits  # the layers' own forward applies no group adapter
    assert torch.equal(routed, unrouted)
    if not peft:  # the full model: exactly the model before the adapters were added
        fresh = AutoModelForCausalLM.from_pretrained(toy_model_dir)
        with torch.no_grad():
            assert torch.equal(routed, fresh(input_ids=input_ids).logits)
    with pytest.raises(RuntimeError, match="rows"), route_groups(model, ["a", "b"]):
        model(input_ids=input_ids)  # 2 routed rows, 3 in the batch: loud, not silently misrouted


def grouped_dataset(labels: list, num_rows: int = 24) -> Dataset:
    groups = [labels[i % len(labels)] for i in range(num_rows)]
    return Dataset.from_dict({"prompt": ["say something for group"] * num_rows, "group": groups})


class RecordingTrainer(PGRPOTrainer):
    """Keeps the labels and the routed adapter indices of every generation batch."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.__dict__.setdefault("batches", []).append(([row["group"] for row in inputs], output[ROWS_KEY].tolist()))
        return output


def make_trainer(model_dir: str, output_dir: Path, dataset: Dataset, max_steps: int = 2, cls=PGRPOTrainer, **options):
    options = {**CPU_ARGS, "group_conditioning": "adapter", **options}
    args = PGRPOConfig(output_dir=str(output_dir), max_steps=max_steps, **options)
    return cls(model=model_dir, reward_funcs=toy_reward, args=args, train_dataset=dataset)


def test_chunked_log_probability_forward_routes_each_chunk(toy_model_dir: str, tmp_path: Path) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, grouped_dataset(LABELS))
    randomize_group_adapters(trainer.group_adapters)
    labels = ["a", "a", "b", "c", "b", "unseen", "c"]
    input_ids = torch.randint(3, 13, (len(labels), 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(input_ids)
    with torch.no_grad(), trainer.group_adapters.route(labels):
        whole, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, 3)
        chunked, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, 3, batch_size=3)
    with torch.no_grad():
        unrouted, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, 3, batch_size=3)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(whole, unrouted)


def test_training_moves_each_groups_adapter_only_with_its_own_rows(toy_model_dir: str, tmp_path: Path) -> None:
    labels = [f"g{i}" for i in range(6)]
    trainer = make_trainer(toy_model_dir, tmp_path, grouped_dataset(labels), cls=RecordingTrainer)
    adapters = trainer.group_adapters
    assert adapters.labels.labels == labels and all(
        p.requires_grad for i in range(6) for p in adapters.parameters(i).values()
    )
    before = [{k: p.detach().clone() for k, p in adapters.parameters(i).items()} for i in range(6)]
    shared_before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" not in k}
    trainer.train()
    seen = {label for batch_labels, rows in trainer.batches for label in batch_labels}
    for batch_labels, rows in trainer.batches:
        assert rows == [labels.index(label) for label in batch_labels]
    moved = {
        label
        for index, label in enumerate(labels)
        if any(not torch.equal(before[index][k], p) for k, p in adapters.parameters(index).items())
    }
    assert moved and len(seen) < 6  # some groups trained, some never drawn
    assert moved <= seen  # (a drawn group whose advantages were all 0 gets no gradient either)
    for index, label in enumerate(labels):
        if label not in seen:
            lora_b = [p for k, p in adapters.parameters(index).items() if ".lora_B." in k]
            assert all(p.abs().sum() == 0 for p in lora_b), label  # still contributes nothing
    state = trainer.model.state_dict()
    assert any(not torch.equal(state[k], v) for k, v in shared_before.items())  # full fine-tuning of shared weights


def test_saved_adapters_load_by_group_and_reproduce_the_trained_policy(toy_model_dir: str, tmp_path: Path) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, grouped_dataset(["a b", "x/y", "c"]))
    randomize_group_adapters(trainer.group_adapters)  # as if trained longer: every adapter matters
    trainer.train()
    final = tmp_path / "final"
    trainer.save_model(str(final))
    index = json.loads((final / ADAPTERS_DIR / "index.json").read_text())
    assert index["labels"] == {"a b": "group_a_b", "x/y": "group_x_y", "c": "group_c"}
    shared_keys = set(load_file(final / "model.safetensors"))
    assert shared_keys == set(load_file(Path(toy_model_dir) / "model.safetensors"))  # no LoRA key, no renamed key

    labels = ["a b", "x/y", "c", "unseen"]
    input_ids = torch.randint(3, 13, (len(labels), 6), generator=torch.Generator().manual_seed(5))
    trainer.model.eval()
    with torch.no_grad():
        with route_groups(trainer.model, labels):
            trained = trainer.model(input_ids=input_ids).logits
        routed = load_routed_policy(final)
        with route_groups(routed, labels):
            torch.testing.assert_close(routed(input_ids=input_ids).logits, trained, rtol=1e-5, atol=1e-5)
        for row, label in enumerate(labels):
            policy = load_group_policy(final, label)
            torch.testing.assert_close(policy(input_ids=input_ids[row : row + 1]).logits[0], trained[row],
                                       rtol=1e-5, atol=1e-5)  # fmt: skip
        shared = AutoModelForCausalLM.from_pretrained(final)
        shared_logits = shared(input_ids=input_ids).logits  # the same batch: kernels may differ across batch sizes
        torch.testing.assert_close(shared_logits[3], trained[3], rtol=1e-6, atol=1e-6)  # unseen: shared weights
        assert all(not torch.allclose(shared_logits[row], trained[row], atol=1e-4) for row in range(3))
        folder = final / ADAPTERS_DIR / "group_c"
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(final), folder)
        torch.testing.assert_close(peft_model(input_ids=input_ids[2:3]).logits[0], trained[2], rtol=1e-5, atol=1e-5)


def test_user_lora_plus_group_adapters_with_a_kl_reference(toy_model_dir: str, tmp_path: Path) -> None:
    """PEFT: the shared weights are the user's LoRA; beta > 0 takes the reference with adapters disabled, which
    must neither route nor leave the group adapters frozen."""
    args = PGRPOConfig(output_dir=str(tmp_path), max_steps=2, group_conditioning="adapter", beta=0.1, **CPU_ARGS)
    trainer = PGRPOTrainer(
        model=toy_model_dir, reward_funcs=toy_reward, args=args, train_dataset=grouped_dataset(["a", "b"]),
        peft_config=LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )  # fmt: skip
    adapters = trainer.group_adapters
    before = [{k: p.detach().clone() for k, p in adapters.parameters(i).items()} for i in range(2)]
    trainer.train()
    assert any("kl" in entry for entry in trainer.state.log_history)
    for index in range(2):
        assert any(not torch.equal(before[index][k], p) for k, p in adapters.parameters(index).items())
    trainer.save_model(str(tmp_path / "final"))
    saved = load_file(tmp_path / "final" / "adapter_model.safetensors")
    assert saved and not any("group_" in key for key in saved)  # the user's adapter file holds only its LoRA
    input_ids = torch.randint(3, 13, (1, 6), generator=torch.Generator().manual_seed(6))
    trainer.model.eval()
    with torch.no_grad(), route_groups(trainer.model, ["b"]):
        trained = trainer.model(input_ids=input_ids).logits
    policy = load_group_policy(tmp_path / "final", "b")
    with torch.no_grad():
        torch.testing.assert_close(policy(input_ids=input_ids).logits, trained, rtol=1e-5, atol=1e-5)


def test_prompt_and_adapter_with_group_options_and_a_kl_reference(toy_model_dir: str, tmp_path: Path) -> None:
    trainer = make_trainer(
        toy_model_dir, tmp_path, grouped_dataset(["a", "b", "b", "b"]), cls=RecordingTrainer,
        group_conditioning="prompt+adapter", estimator="pgrpo", group_sampling_alpha=0.0,
        group_weighting="worst_group", beta=0.1, steps_per_generation=2,
        group_descriptions={"a": "big", "b": "small"},  # words the toy tokenizer knows, so the groups read apart
    )  # fmt: skip
    trainer.train()
    assert all(row["prompt"].startswith("User group:") for row in trainer.train_dataset)
    assert any("kl" in entry for entry in trainer.state.log_history)
    assert trainer.batches and all(rows == [["a", "b"].index(g) for g in labels] for labels, rows in trainer.batches)


@pytest.mark.parametrize(
    ("labels", "message"),
    [(["a b", "a_b"], "both give the adapter name"), (["x.1", "x-1"], "rename one of them")],
)
def test_labels_that_collide_as_adapter_names_are_rejected(
    toy_model_dir: str, tmp_path: Path, labels: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_trainer(toy_model_dir, tmp_path, grouped_dataset(labels))


def test_adapter_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="group_adapter_r"):
        PGRPOConfig(output_dir=str(tmp_path), group_conditioning="adapter", group_adapter_r=0, **CPU_ARGS)
    with pytest.raises(ValueError, match="use_vllm=False"):
        PGRPOConfig(output_dir=str(tmp_path), group_conditioning="adapter", use_vllm=True, **CPU_ARGS)
    assert PGRPOConfig(output_dir=str(tmp_path), group_conditioning="adapter", **CPU_ARGS).ddp_find_unused_parameters


def deepspeed_config(stage: int) -> dict:
    return {"zero_optimization": {"stage": stage}, "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto", "gradient_accumulation_steps": "auto"}  # fmt: skip


@pytest.mark.parametrize(
    ("options", "environment", "refused"),
    [
        ({"deepspeed": deepspeed_config(3)}, {}, "DeepSpeed ZeRO-3"),
        ({"deepspeed": "zero3.json"}, {}, "DeepSpeed ZeRO-3"),
        ({}, {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "DeepSpeed ZeRO-3"),
        ({"fsdp": True}, {}, "FSDP"),
        ({}, {"ACCELERATE_USE_FSDP": "true"}, "FSDP"),  # what `accelerate launch` with an FSDP config sets
        ({"deepspeed": deepspeed_config(2)}, {}, None),
        ({}, {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, None),
    ],
)
def test_adapters_are_refused_where_parameters_are_sharded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict, environment: dict, refused: str | None
) -> None:
    """Adapters are saved from and loaded into each process's own parameters: under ZeRO-3 or FSDP those are shards,
    so such a run is refused up front (no GPU needed: the launchers' settings are read from the config and the
    environment accelerate sets)."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    if "deepspeed" in options or "ACCELERATE_USE_DEEPSPEED" in environment:  # transformers reads a DeepSpeed config
        pytest.importorskip("deepspeed", reason="only with DeepSpeed installed: the dev extra has it, the lowest- and "
                            "newest-version venvs (scripts/test_versions.sh) leave it out")  # fmt: skip
    (tmp_path / "zero3.json").write_text(json.dumps(deepspeed_config(3)))
    monkeypatch.chdir(tmp_path)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    make = functools.partial(PGRPOConfig, output_dir=str(tmp_path), **options, **CPU_ARGS)
    try:
        if refused is None:
            assert make(group_conditioning="adapter").ddp_find_unused_parameters
            return
        with pytest.raises(ValueError, match=rf"not support {refused}.*Use DeepSpeed ZeRO-2 .* or DDP"):
            make(group_conditioning="adapter")
        assert not is_deepspeed_zero3_enabled()  # the refused config left no process-wide ZeRO-3 switch on
        make(group_conditioning="prompt")  # the other conditioning is fine
    finally:
        unset_hf_deepspeed_config()


def test_activation_checkpointing_recomputes_the_routed_forward(toy_model_dir: str, tmp_path: Path) -> None:
    """The backward re-runs the forward with checkpointing (the GPU default): it must see the same routing."""
    trained = []
    for checkpointing in (False, True):
        trainer = make_trainer(toy_model_dir, tmp_path / str(checkpointing), grouped_dataset(LABELS),
                               gradient_checkpointing=checkpointing)  # fmt: skip
        # both runs must draw the same completions, from logits that differ by float noise (checkpointing turns the
        # shared prompts off); which draw such noise flips depends on the sampler (on transformers 5.0 one flips with
        # the inverse-CDF draw): the routing is what is compared, so both draw as torch does
        trainer.inverse_cdf_sampling = False
        torch.manual_seed(0)
        randomize_group_adapters(trainer.group_adapters)
        trainer.train()
        trained.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
    assert trained[0].keys() == trained[1].keys()
    for key, value in trained[0].items():
        torch.testing.assert_close(trained[1][key], value, rtol=1e-4, atol=1e-6, msg=key)
