"""A tiny word-level Llama policy for a task, warm-started with SFT and cached on disk.

The tokenizer is a ``tokenizers`` WordLevel model trained on ``task.corpus()`` (lowercased,
split on whitespace and punctuation; special tokens ``<pad> <unk> <bos> <eos>``; a few hundred
words for the built-in tasks), wrapped as ``PreTrainedTokenizerFast`` with left padding. The
model is a ``LlamaForCausalLM`` with tied embeddings (hidden 128, 2 layers, 4 heads: ~0.4M
parameters) trained with a short supervised loop on ``task.sft_dataset`` (prompt/completion,
loss on completion tokens only, eos appended) so that it answers on topic before RL.

The result is saved (``save_pretrained`` of model and tokenizer, plus ``pgrpo_policy.json``
with the build settings and the mean SFT loss) under ``cache_dir/tiny-<task>-<key>/``, where
key hashes the task's name and text (corpus, which includes the SFT data), the model and SFT
settings and the seed; reward-only options (scale, noise, binary) leave it unchanged, so such
variants of a task share one warm-started policy. A cached directory is a normal model path,
e.g. ``GRPOTrainer(model=path)``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

from pgrpo.models.cache import build_once, default_cache_dir, fingerprint
from pgrpo.tasks.base import Task

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
FORMAT_VERSION = 2  # bump when a change here changes what a cached build contains


def build_word_tokenizer(texts: list[str], max_vocab: int = 2048, max_length: int = 128) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``texts``: the ``max_vocab - 4`` most frequent lowercase words and punctuation."""
    tokenizer = Tokenizer(WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, WordLevelTrainer(vocab_size=max_vocab, special_tokens=[PAD, UNK, BOS, EOS]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        model_max_length=max_length,
    )


def tiny_policy_path(
    task: Task,
    cache_dir: str | Path | None = None,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    max_length: int = 128,
    max_vocab: int = 2048,
    sft_steps: int = 200,
    sft_batch_size: int = 32,
    sft_learning_rate: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Directory of the tiny policy for ``task`` with these settings, built (~30 s on one CPU core) if not cached.

    ``sft_steps=0`` gives the randomly initialised model (same tokenizer), e.g. as a baseline.
    """
    if sft_steps > 0 and task.sft_dataset is None:
        raise ValueError(
            f"Task {task.name!r} has no sft_dataset to warm-start the tiny policy from. Give the task "
            "prompt/completion pairs (task_from_dataset(..., sft_dataset=pairs)); or pass sft_steps=0 for an "
            "untrained tiny policy (tiny_policy_path(task, sft_steps=0) returns its path, for pgrpo train "
            "--model_name_or_path PATH); or train your own model (--model_name_or_path smollm2, a path or a hub id)."
        )
    texts = task.corpus()
    settings = {
        "format": FORMAT_VERSION, "task": task.name, "corpus": fingerprint(texts),
        "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads, "max_length": max_length,
        "max_vocab": max_vocab, "sft_steps": sft_steps, "sft_batch_size": sft_batch_size,
        "sft_learning_rate": sft_learning_rate, "seed": seed,
    }  # fmt: skip
    target = Path(cache_dir or default_cache_dir()) / f"tiny-{task.name}-{fingerprint(settings)}"

    def build(directory: Path) -> None:
        start = time.perf_counter()
        tokenizer = build_word_tokenizer(texts, max_vocab, max_length)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_length,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        sft_loss = None
        if sft_steps > 0:
            sft_loss = _sft(model, tokenizer, task, sft_steps, sft_batch_size, sft_learning_rate, max_length, seed)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        report = {**settings, "vocab_size": len(tokenizer), "parameters": model.num_parameters(), "sft_loss": sft_loss}
        report["build_seconds"] = round(time.perf_counter() - start, 2)
        (directory / "pgrpo_policy.json").write_text(json.dumps(report, indent=2, default=str))

    return build_once(target, build)


def _sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    task: Task,
    steps: int,
    batch_size: int,
    learning_rate: float,
    max_length: int,
    seed: int,
) -> float:
    """Completion-only SFT of ``model`` in place on ``task.sft_dataset``; returns the mean training loss.

    Cross-entropy on the completion tokens (eos appended) of shuffled prompt/completion pairs, epoch after epoch;
    AdamW (no weight decay), 10% linear warm-up then cosine decay, gradients clipped at norm 1, fp32 on the CPU.
    A plain loop, not TRL's ``SFTTrainer``: a Trainer fixes accelerate's process-wide state (device, mixed
    precision) when it is created, so a P-GRPO trainer created later in the same process with other settings
    would fail; and a 0.4M-parameter model gains nothing from an accelerator.
    """
    pairs = zip(task.sft_dataset["prompt"], task.sft_dataset["completion"], strict=True)
    examples = []
    for prompt, completion in pairs:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + completion_ids)[:max_length]
        labels = ([-100] * len(prompt_ids) + completion_ids)[:max_length]
        examples.append((torch.tensor(ids), torch.tensor(labels)))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, steps // 10, steps)
    order = torch.randperm(len(examples), generator=generator)
    cursor, losses = 0, []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrices are too small to gain from threads, and spin-waits on busy CPUs cost
    model.train()
    try:
        for _ in range(steps):
            if cursor + batch_size > len(order):  # next epoch
                order, cursor = torch.randperm(len(examples), generator=generator), 0
            batch = [examples[i] for i in order[cursor : cursor + batch_size].tolist()]
            cursor += batch_size
            ids = pad_sequence([x for x, _ in batch], batch_first=True, padding_value=tokenizer.pad_token_id)
            labels = pad_sequence([y for _, y in batch], batch_first=True, padding_value=-100)
            mask = pad_sequence([torch.ones_like(x) for x, _ in batch], batch_first=True, padding_value=0)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return sum(losses) / len(losses)


def build_tiny_policy(
    task: Task, cache_dir: str | Path | None = None, **settings: int | float
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of the tiny policy for ``task``, built or loaded from the cache.

    ``settings`` are the keyword arguments of :func:`tiny_policy_path`: hidden_size=128, num_layers=2,
    num_heads=4, max_length=128, max_vocab=2048, sft_steps=200, sft_batch_size=32, sft_learning_rate=3e-3, seed=0.
    """
    path = tiny_policy_path(task, cache_dir, **settings)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
