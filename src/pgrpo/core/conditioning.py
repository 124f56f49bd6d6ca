"""Group conditioning: telling the policy whom it serves, so that one policy can behave differently per group.

Two mechanisms (``PGRPOConfig.group_conditioning``), combinable:

* ``prompt``: every prompt of group g gets the text ``template.format(group=g, description=d_g)`` (``d_g`` the
  group's description, by default its label), the same way in training, evaluation and inference. A plain-text
  prompt ``x`` becomes ``"<text> x"``; a conversational prompt (a list of ``{"role", "content"}`` messages) gets
  the text as its system message (prepended to an existing system message), or with ``role="user"`` at the start
  of its first user message (where some small instruct models follow an instruction better than in a system message).
* ``adapter``: a LoRA adapter per group on the shared weights, each completion routed through its own group's
  adapter (``pgrpo.models.adapters``); a group without an adapter uses the shared weights alone.

A run's settings (``PGRPOConfig`` fields, the trainer section of its config.yaml) are decoded once, by
:meth:`GroupConditioning.from_settings`, into the one object that training, evaluation and serving share.
This module is the pure part: no TRL, no model, no tokenizer.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONDITIONINGS: tuple[str, ...] = ("none", "prompt", "adapter", "prompt+adapter")
PROMPT_ROLES: tuple[str, ...] = ("system", "user")  # where a chat prompt gets its group's text
DEFAULT_TEMPLATE = "User group: {description}."
TEMPLATE_FIELDS = {"group", "description"}
# the settings (PGRPOConfig fields) that say how a run conditions its policy on the group
SETTINGS: tuple[str, ...] = ("group_conditioning", "group_prompt_template", "group_prompt_role", "group_descriptions")
Prompt = str | list[dict[str, Any]]


def uses_prompt(conditioning: str) -> bool:
    """Whether ``conditioning`` (one of :data:`CONDITIONINGS`) puts the group into the prompt."""
    return "prompt" in conditioning.split("+")


def uses_adapter(conditioning: str) -> bool:
    """Whether ``conditioning`` routes each completion through its group's adapter."""
    return "adapter" in conditioning.split("+")


def validate_conditioning(conditioning: str) -> None:
    if conditioning not in CONDITIONINGS:
        raise ValueError(
            f"Unknown group_conditioning {conditioning!r}; choose one of {', '.join(CONDITIONINGS)} (prompt: the "
            "group's description in every prompt; adapter: a LoRA adapter per group)."
        )


def validate_template(template: str) -> None:
    """A template must name ``{group}`` or ``{description}`` and nothing else."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f"group_prompt_template {template!r} is not a valid format string: {error}.") from error
    if unknown := sorted(names - TEMPLATE_FIELDS):
        raise ValueError(
            f"group_prompt_template {template!r} names {unknown}; it may use only {{group}} (the label) and "
            "{description} (the group's description), e.g. 'User group: {description}.'"
        )
    if not names:
        raise ValueError(
            f"group_prompt_template {template!r} names neither {{group}} nor {{description}}, so every group would "
            "get the same text; e.g. 'User group: {description}.'"
        )


def read_descriptions(value: Mapping[Any, str] | str | None) -> dict[str, str]:
    """Group descriptions {str(label): text} from a mapping, a JSON object text, or a .json/.yaml file path."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise ValueError(
                    f"group_descriptions {value!r} is neither a JSON object nor an existing .json/.yaml file; give "
                    'e.g. \'{"eleanor": "a retired judge who loves classical music"}\'.'
                )
            text = path.read_text()
        try:
            value = yaml.safe_load(text)  # YAML is a superset of JSON
        except yaml.YAMLError as error:
            raise ValueError(f"group_descriptions could not be read as JSON or YAML: {error}") from error
    if not isinstance(value, Mapping) or not all(isinstance(text, str) for text in value.values()):
        raise ValueError(
            f"group_descriptions must map each group label to a text, got {value!r}; e.g. {{'a': 'wants calm music'}}."
        )
    return {str(label): text for label, text in value.items()}


@dataclass(frozen=True)
class PromptConditioning:
    """The text each group's prompts get (module docstring); labels are compared as ``str``."""

    template: str = DEFAULT_TEMPLATE
    descriptions: Mapping[str, str] = field(default_factory=dict)
    role: str = "system"

    def __post_init__(self) -> None:
        validate_template(self.template)
        if self.role not in PROMPT_ROLES:
            raise ValueError(
                f"group_prompt_role {self.role!r}: choose {' or '.join(PROMPT_ROLES)} (where a chat prompt gets its "
                "group's text: its system message, or the start of its first user message)."
            )

    def text(self, label: Any) -> str:
        """``template`` filled with the label and its description (the label itself when it has none)."""
        return self.template.format(group=label, description=self.descriptions.get(str(label), str(label)))

    def apply(self, prompt: Prompt, label: Any) -> Prompt:
        """``prompt`` of a user of group ``label``: text prefixed, or the text as (the start of) the system message, or
        with ``role="user"`` prefixed to the first user message."""
        text = self.text(label)
        if isinstance(prompt, str):
            return f"{text} {prompt}"
        messages = [dict(message) for message in prompt]
        users = [i for i, message in enumerate(messages) if message.get("role") == "user"]
        if self.role == "user" and users:
            messages[users[0]]["content"] = f"{text} {messages[users[0]]['content']}"
            return messages
        if messages and messages[0].get("role") == "system":
            messages[0]["content"] = f"{text} {messages[0]['content']}"
            return messages
        return [{"role": "system", "content": text}, *messages]


@dataclass(frozen=True)
class GroupConditioning:
    """How a run tells its policy whom it serves: ``prompt`` (each group's text; None: no text) and ``adapters``
    (each group routed through its own adapter)."""

    prompt: PromptConditioning | None = None
    adapters: bool = False

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], default_descriptions: Mapping[str, str] | None = None
    ) -> GroupConditioning:
        """Decode :data:`SETTINGS` from ``settings`` (``PGRPOConfig`` fields, a run's config.yaml trainer section or
        bench flags); one left out has its ``PGRPOConfig`` default (a run saved before ``group_prompt_role`` existed
        gets the system message). ``default_descriptions`` describe the groups when ``settings`` give none."""
        kind = settings.get("group_conditioning") or "none"
        validate_conditioning(kind)
        if not uses_prompt(kind):
            return cls(None, uses_adapter(kind))
        descriptions = read_descriptions(settings.get("group_descriptions")) or dict(default_descriptions or {})
        template = settings.get("group_prompt_template") or DEFAULT_TEMPLATE
        return cls(PromptConditioning(template, descriptions, settings.get("group_prompt_role") or "system"),
                   uses_adapter(kind))  # fmt: skip

    @property
    def kind(self) -> str:
        """The ``group_conditioning`` setting this decodes: one of :data:`CONDITIONINGS`."""
        parts = ["prompt"] * (self.prompt is not None) + ["adapter"] * self.adapters
        return "+".join(parts) or "none"

    def apply(self, prompt: Prompt, label: Any) -> Prompt:
        """``prompt`` as a user of group ``label`` asks it: with the group's text, if the run puts one in prompts."""
        return prompt if self.prompt is None else self.prompt.apply(prompt, label)


def check_descriptions(descriptions: Mapping[str, str], labels: list[Any], where: str) -> None:
    """Refuse descriptions of groups that ``labels`` (the data's group labels) do not have: a misspelled key would
    otherwise leave its group described by its bare label, silently."""
    known = sorted({str(label) for label in labels})
    if unknown := sorted(set(descriptions) - set(known)):
        raise ValueError(
            f"group_descriptions name {unknown}, which are not groups of {where}; its groups are {known}. Describe "
            "those (a group left out is described by its label)."
        )
