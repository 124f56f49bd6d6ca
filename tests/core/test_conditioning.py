"""Prompt conditioning: the text each group's prompts get, for plain and conversational prompts, and its options."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgrpo.core.conditioning import (
    GroupConditioning,
    PromptConditioning,
    read_descriptions,
    uses_adapter,
    uses_prompt,
    validate_conditioning,
)


def test_plain_prompts_get_the_groups_text_in_front() -> None:
    conditioning = PromptConditioning("User group: {description}.", {"a": "likes calm music"})
    assert conditioning.apply("Recommend a song.", "a") == "User group: likes calm music. Recommend a song."
    assert conditioning.apply("Recommend a song.", "b") == "User group: b. Recommend a song."  # no description
    assert PromptConditioning("[{group}]").apply("Hi.", 3) == "[3] Hi."  # int labels, described as text


def test_conversational_prompts_get_it_as_the_system_message() -> None:
    conditioning = PromptConditioning("You serve {group}: {description}.", {"1": "wants a one-star review"})
    user = [{"role": "user", "content": "Write a review."}]
    assert conditioning.apply(user, 1) == [
        {"role": "system", "content": "You serve 1: wants a one-star review."},
        {"role": "user", "content": "Write a review."},
    ]
    assert user == [{"role": "user", "content": "Write a review."}]  # the input is not changed
    with_system = [{"role": "system", "content": "Be brief."}, *user]
    assert conditioning.apply(with_system, 2)[0] == {"role": "system", "content": "You serve 2: 2. Be brief."}


def test_with_the_user_role_the_text_starts_the_first_user_message() -> None:
    conditioning = PromptConditioning("{description}", {"1": "Write a one-star review."}, role="user")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Review my coat."},
            {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "Shorter."}]  # fmt: skip
    assert conditioning.apply(chat, 1) == [
        {"role": "system", "content": "Be brief."},  # the system message is left alone
        {"role": "user", "content": "Write a one-star review. Review my coat."},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Shorter."},
    ]
    assert conditioning.apply("Review my coat.", 1) == "Write a one-star review. Review my coat."  # plain text alike
    with pytest.raises(ValueError, match="group_prompt_role 'assistant': choose system or user"):
        PromptConditioning(role="assistant")


def test_mechanisms() -> None:
    assert uses_prompt("prompt") and uses_prompt("prompt+adapter") and not uses_prompt("adapter")
    assert uses_adapter("adapter") and uses_adapter("prompt+adapter") and not uses_adapter("none")
    with pytest.raises(ValueError, match="Unknown group_conditioning 'prompts'; choose one of none, prompt, adapter"):
        validate_conditioning("prompts")


def test_templates_must_name_the_group_and_nothing_else() -> None:
    with pytest.raises(ValueError, match=r"names \['user'\]; it may use only \{group\}"):
        PromptConditioning("Hello {user}")
    with pytest.raises(ValueError, match="names neither"):
        PromptConditioning("Hello")
    with pytest.raises(ValueError, match="not a valid format string"):
        PromptConditioning("Hello {group")


def test_descriptions_from_a_mapping_json_or_a_yaml_file(tmp_path: Path) -> None:
    assert read_descriptions({1: "one star"}) == {"1": "one star"}
    assert read_descriptions('{"a": "calm"}') == {"a": "calm"}
    (tmp_path / "groups.yaml").write_text("a: likes calm music\nb: likes loud music\n")
    assert read_descriptions(str(tmp_path / "groups.yaml")) == {"a": "likes calm music", "b": "likes loud music"}
    assert read_descriptions(None) == {} and read_descriptions("") == {}
    with pytest.raises(ValueError, match=r"neither a JSON object nor an existing \.json/\.yaml file"):
        read_descriptions(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="must map each group label to a text"):
        read_descriptions('{"a": 3}')


def test_a_runs_settings_decode_into_one_conditioning() -> None:
    saved = {"group_conditioning": "prompt+adapter", "group_prompt_template": "[{group}] {description}",
             "group_prompt_role": "user", "group_descriptions": '{"a": "likes jazz"}'}  # fmt: skip
    decoded = GroupConditioning.from_settings(saved)
    assert decoded.kind == "prompt+adapter" and decoded.adapters
    assert decoded.prompt == PromptConditioning("[{group}] {description}", {"a": "likes jazz"}, "user")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]
    assert decoded.apply(chat, "a")[1] == {"role": "user", "content": "[a] likes jazz Hi."}
    adapter = GroupConditioning.from_settings({"group_conditioning": "adapter", "group_prompt_template": "{group}"})
    assert (adapter.kind, adapter.prompt, adapter.apply("Hi.", "a")) == ("adapter", None, "Hi.")
    assert GroupConditioning.from_settings({}).kind == "none"  # a run without the settings: none
    # a run saved before group_prompt_role existed: the system message; the caller's descriptions where none are saved
    older = GroupConditioning.from_settings({"group_conditioning": "prompt"}, default_descriptions={"a": "x"})
    assert older.prompt == PromptConditioning("User group: {description}.", {"a": "x"}, "system")
    with pytest.raises(ValueError, match="Unknown group_conditioning 'prompts'"):
        GroupConditioning.from_settings({"group_conditioning": "prompts"})
