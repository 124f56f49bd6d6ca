"""Adapter group conditioning: a LoRA adapter per preference group on shared weights, each row routed through its own.

No TRL here: the trainer (``pgrpo.trainer.adapters``) attaches and trains them, serving (``pgrpo.models.serving``)
loads them.

For a target linear layer with shared output ``h(x)`` (the base weights, plus the user's own LoRA if training with
PEFT), row ``i`` of a batch whose group ``g(i)`` has an adapter gets

    y_i = h(x_i) + (alpha / r) * B_g(i) A_g(i) x_i        (A_g: r x d_in, B_g: d_out x r, B_g = 0 at init)

and a row without one (``None``, an unseen label) gets ``h(x_i)``: the shared weights alone. PEFT's own mixed-batch
routing (``adapter_names=``) works in inference only, so the group terms are added by forward hooks on PEFT's LoRA
layers, differentiably, for the rows a :class:`GroupRouter` assigns; the layers' own (un-routed) forward never applies
a group adapter. Adapters are injected with ``peft.inject_adapter_in_model`` into the plain model (full fine-tuning of
the shared weights) or into a ``PeftModel``'s base (same target modules as the user's LoRA ``"default"``).

Saved layout (``GroupAdapters.save``): ``<dir>/group_adapters/index.json`` ({"labels": {label: folder}}) and one PEFT
adapter folder per group, ``<dir>/group_adapters/<folder>/`` (``adapter_config.json``,
``adapter_model.safetensors``), loadable with ``PeftModel.from_pretrained(shared_model, folder)``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from pgrpo.core.labels import GroupLabels

ADAPTERS_DIR = "group_adapters"
INDEX_FILE = "index.json"


def adapter_name(label: Any) -> str:
    """A valid module name for ``label``'s adapter: ``group_`` + the label with other characters than [0-9A-Za-z_]
    replaced by ``_`` (e.g. ``"Eleanor R."`` -> ``"group_Eleanor_R_"``)."""
    return "group_" + re.sub(r"[^0-9A-Za-z_]", "_", str(label))


def adapter_names(labels: Sequence[Any]) -> list[str]:
    """:func:`adapter_name` of each label; labels that would share a name are an error."""
    names = [adapter_name(label) for label in labels]
    seen: dict[str, Any] = {}
    for label, name in zip(labels, names, strict=True):
        if name in seen:
            raise ValueError(
                f"Group labels {seen[name]!r} and {label!r} both give the adapter name {name!r} (characters other "
                "than letters, digits and '_' become '_'); rename one of them in the group column."
            )
        seen[name] = label
    return names


class GroupRouter:
    """The adapter index of each row of the forwards to come (``rows``: (B,) long, -1 = shared weights), or None."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None
        self.parts: list[tuple[int, torch.Tensor]] = []  # (adapter index, (n_g,) row positions) per present group

    def set(self, rows: torch.Tensor | None) -> None:
        self.rows = rows
        groups = [] if rows is None else torch.unique(rows[rows >= 0]).tolist()
        self.parts = [(g, torch.nonzero(rows == g).flatten()) for g in groups]

    @contextmanager
    def route(self, rows: torch.Tensor | None) -> Iterator[None]:
        """Route ``rows`` during the block, then restore what was routed before."""
        previous = self.rows
        self.set(rows)
        try:
            yield
        finally:
            self.set(previous)


class GroupAdapters:
    """One LoRA adapter per group label, injected into ``model`` and routed per row (module docstring).

    Args:
        model: a ``PreTrainedModel`` (group adapters on all its linear layers but the head) or a ``PeftModel`` with a
            LoRA adapter (group adapters on the same target modules).
        labels: the group labels, in a fixed order (the same on every process).
        r, alpha: LoRA rank and alpha of each group's adapter.
        target_modules: override the target modules (e.g. those of saved adapters).
    """

    def __init__(self, model: nn.Module, labels: Sequence[Any], r: int, alpha: int, target_modules: Any = None) -> None:
        self.labels = GroupLabels([str(label) for label in labels])  # compared as str, as in saved files
        self.names = adapter_names(self.labels.labels)
        self.router = GroupRouter()
        self.base = model.base_model.model if isinstance(model, PeftModel) else model
        if target_modules is None:
            target_modules = shared_target_modules(model)
        self.config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules)
        trainable = {name: p.requires_grad for name, p in self.base.named_parameters()}
        active = {name: list(m.active_adapters) for name, m in self.base.named_modules() if isinstance(m, LoraLayer)}
        shared_configs = getattr(self.base, "peft_config", None)
        with warnings.catch_warnings():  # PEFT warns that a model gets several adapters: that is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            for name in self.names:
                inject_adapter_in_model(self.config, self.base, adapter_name=name)
        if shared_configs is None:
            del self.base.peft_config  # injected into a plain model: it stays a plain PreTrainedModel
        else:
            for name in self.names:  # keep the group adapters out of PEFT's own saving and loading
                shared_configs.pop(name, None)
        self.layers: dict[str, LoraLayer] = {}
        self.shared_active: dict[int, list[str]] = {}
        for path, module in self.base.named_modules():
            if isinstance(module, LoraLayer) and self.names[0] in module.lora_A:
                module.set_adapter(active.get(path, []))  # the un-routed forward: the shared adapter(s) only
                self.layers[path] = module
                self.shared_active[id(module)] = list(module.active_adapters)
                module.register_forward_hook(self._add_group_outputs)
        for name, parameter in self.base.named_parameters():
            parameter.requires_grad_(trainable.get(name, True))
        self.base._pgrpo_group_adapters = self

    # ---------------------------------------------------------------- routing
    def rows(self, labels: Sequence[Any], device: torch.device | str = "cpu") -> torch.Tensor:
        """(B,) adapter index of each row's label, -1 for a label without an adapter (shared weights)."""
        return self.labels.encode([str(label) for label in labels], add=False).to(device)

    def route(self, labels: Sequence[Any]) -> Any:
        """Context manager: every forward in the block routes row i through ``labels[i]``'s adapter."""
        return self.router.route(self.rows(labels))

    def _add_group_outputs(self, layer: LoraLayer, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        rows = self.router.rows
        if rows is None or layer.disable_adapters or list(layer.active_adapters) != self.shared_active[id(layer)]:
            return None  # not routed, or a reference forward (adapters disabled / another adapter active)
        x = args[0]
        if x.shape[0] != len(rows):
            raise RuntimeError(
                f"Group routing holds {len(rows)} rows but a layer sees a batch of {x.shape[0]}: route each forward "
                "with its own rows (route_groups per batch, and per chunk)."
            )
        for index, positions in self.router.parts:
            name = self.names[index]
            lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
            positions = positions.to(x.device)
            sub = layer.lora_dropout[name](x.index_select(0, positions).to(lora_a.weight.dtype))
            output = output.index_add(0, positions, (lora_b(lora_a(sub)) * layer.scaling[name]).to(output.dtype))
        return output

    # ---------------------------------------------------------------- parameters
    def parameters(self, index: int) -> dict[str, nn.Parameter]:
        """Group ``index``'s LoRA parameters, keyed as in a PEFT adapter file."""
        name = self.names[index]
        return {
            f"base_model.model.{path}.lora_{part}.weight": getattr(layer, f"lora_{part}")[name].weight
            for path, layer in self.layers.items()
            for part in ("A", "B")
        }

    def require_grad(self) -> None:
        """Make every group adapter trainable again (PEFT's set_adapter/enable_adapters freeze inactive adapters)."""
        for index in range(len(self.names)):
            for parameter in self.parameters(index).values():
                parameter.requires_grad_(True)

    @contextmanager
    def detached(self) -> Iterator[None]:
        """The model without its group adapters during the block (same parameter objects), so that it saves and loads
        exactly as the shared model: a layer that holds only group adapters is replaced by its base layer, the group
        entries of one that also holds the user's LoRA are taken out, then all is put back in the same order."""
        swapped, removed = [], []
        for path, layer in self.layers.items():
            if set(layer.lora_A) <= set(self.names):
                parent_path, _, attribute = path.rpartition(".")
                parent = self.base.get_submodule(parent_path)
                setattr(parent, attribute, layer.base_layer)
                swapped.append((parent, attribute, layer))
            else:
                removed.append((layer, [(name, layer.lora_A.pop(name), layer.lora_B.pop(name)) for name in self.names]))
        try:
            yield
        finally:
            for parent, attribute, layer in swapped:
                setattr(parent, attribute, layer)
            for layer, entries in removed:
                for name, lora_a, lora_b in entries:
                    layer.lora_A[name], layer.lora_B[name] = lora_a, lora_b

    # ---------------------------------------------------------------- files
    def save(self, directory: Path) -> None:
        """Write every group's PEFT adapter folder and ``index.json`` under ``directory / ADAPTERS_DIR``."""
        root = Path(directory) / ADAPTERS_DIR
        root.mkdir(parents=True, exist_ok=True)
        config = LoraConfig(
            r=self.config.r,
            lora_alpha=self.config.lora_alpha,
            target_modules=sorted(self.layers),
            base_model_name_or_path=getattr(self.base, "name_or_path", None),
        )
        for index, name in enumerate(self.names):
            config.save_pretrained(root / name)
            tensors = {key: p.detach().cpu().contiguous() for key, p in self.parameters(index).items()}
            save_file(tensors, root / name / "adapter_model.safetensors", metadata={"format": "pt"})
        index = {"labels": dict(zip(self.labels.labels, self.names, strict=True)), "r": self.config.r,
                 "alpha": self.config.lora_alpha}  # fmt: skip
        (root / INDEX_FILE).write_text(json.dumps(index, indent=1))

    def load(self, directory: Path) -> None:
        """Copy the group adapters saved under ``directory / ADAPTERS_DIR`` into this model's adapters, in place."""
        root = Path(directory) / ADAPTERS_DIR
        saved = read_index(directory)["labels"]
        expected = dict(zip(self.labels.labels, self.names, strict=True))
        if saved != expected:
            raise ValueError(
                f"{root} holds adapters for groups {sorted(saved)}, but this run's groups are {sorted(expected)}; "
                "resume with the same training data (group column)."
            )
        for index, name in enumerate(self.names):
            tensors = load_file(root / name / "adapter_model.safetensors")
            with torch.no_grad():
                for key, parameter in self.parameters(index).items():
                    parameter.copy_(tensors[key])


def shared_target_modules(model: nn.Module) -> Any:
    """The modules group adapters target: the user's LoRA's (a ``PeftModel``) or every linear layer but the head."""
    if not isinstance(model, PeftModel):
        return "all-linear"
    config = model.peft_config[model.active_adapter]
    if not isinstance(config, LoraConfig):
        raise ValueError(
            "group_conditioning='adapter' adds LoRA adapters next to a LoRA peft_config, got a "
            f"{type(config).__name__}; use a LoraConfig or no peft_config (full fine-tuning of the shared model)."
        )
    return config.target_modules


def find_group_adapters(model: nn.Module) -> GroupAdapters:
    """The :class:`GroupAdapters` attached to ``model`` (or to a module inside it, e.g. under DDP or PEFT)."""
    for module in model.modules():
        if (adapters := module.__dict__.get("_pgrpo_group_adapters")) is not None:
            return adapters
    raise ValueError(
        "This model has no group adapters; load it with pgrpo.models.serving.load_routed_policy(model_dir)."
    )


def route_groups(model: nn.Module, labels: Sequence[Any]) -> Any:
    """Context manager: in the block, every forward of ``model`` (a batch of ``len(labels)`` rows: ``generate`` or a
    log-probability forward) routes row i through ``labels[i]``'s adapter; unseen labels use the shared weights."""
    return find_group_adapters(model).route(labels)


def read_index(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / ADAPTERS_DIR / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no group adapters ({path} is missing); save with PGRPOTrainer.")
    return json.loads(path.read_text())
