"""What pgrpo depends on in TRL beyond its public API: the supported release and the private methods it overrides.

Every private ``GRPOTrainer`` method that ``PGRPOTrainer`` (or its :class:`~pgrpo.trainer.cpu.CPUFastPath` mix-in)
overrides is listed once in :data:`OVERRIDDEN_TRL_METHODS`, with TRL's parameters (checked against the installed TRL
by ``tests/trainer/test_trainer.py``), what the override changes, and the tests that fail if that change breaks.
Public methods we override (``training_step``, ``save_model``) are not listed.
"""

from __future__ import annotations

from typing import NamedTuple

from packaging.specifiers import SpecifierSet
from packaging.version import Version

SUPPORTED_TRL = SpecifierSet(">=1.16,<1.17")


class Override(NamedTuple):
    """One overridden private TRL method.

    parameters: TRL's parameter names (an override that forwards ``**kwargs`` names a prefix of them).
    changes: what the override changes in TRL's behaviour.
    pinned_by: ``tests/<file>.py::<test>`` that fail if the change is lost or TRL's method changes under it.
    """

    parameters: tuple[str, ...]
    changes: str
    pinned_by: tuple[str, ...]


TRAINER_TESTS = "tests/trainer/test_trainer.py"
ADAPTER_TESTS = "tests/trainer/test_adapters.py"
CPU_TESTS = "tests/trainer/test_cpu_fast_path.py"
PREFIX_TESTS = "tests/trainer/test_prefix.py"
OVERRIDDEN_TRL_METHODS: dict[str, Override] = {
    "_calculate_rewards": Override(
        ("self", "inputs", "prompts", "completions", "completion_ids_list"),
        "keeps the rewards TRL gathered from every process and gathers the group labels in the same order",
        (
            f"{TRAINER_TESTS}::test_trained_advantages_equal_the_numpy_reference",
            "tests/reliability/test_distributed.py::"
            "test_torchrun_ranks_hold_identical_statistics_equal_to_the_reference",
        ),
    ),
    "_generate_and_score_completions": Override(
        ("self", "inputs"),
        "replaces the advantages (and TRL's logged ones) with the engine's for this process's rows, logs the group "
        "metrics, routes generation through each row's group adapter and adds the per-row adapter index to the batch. "
        "TRL still computes its own advantages first: they are inline in this ~580-line method, with no hook to skip "
        "them, and avoiding them would mean copying it; they cost a few vector operations on the gathered rewards "
        "(nothing next to generation) and are then replaced, so the engine's are the only ones computed from the "
        "group statistics, once per generation batch. TRL's logged advantages (the deque behind log_completions' "
        "table) are popped and refilled with the engine's, so the table shows what was trained with; TRL has no "
        "other way to set them",
        (
            f"{TRAINER_TESTS}::test_trained_advantages_equal_the_numpy_reference",
            f"{TRAINER_TESTS}::test_logged_group_curves_carry_each_groups_running_reward",
            f"{ADAPTER_TESTS}::test_training_moves_each_groups_adapter_only_with_its_own_rows",
        ),
    ),
    "_generate_single_turn": Override(
        ("self", "prompt_ids", "images", "multimodal_fields", "num_generations", "has_tool_images"),
        "CPU fast path: generation on one thread, each distinct prompt prefilled once",
        (
            f"{CPU_TESTS}::test_generation_runs_on_generation_threads_and_restores_torch_threads",
            f"{PREFIX_TESTS}::test_generation_prefills_each_prompt_once_and_generates_the_same_tokens",
            f"{PREFIX_TESTS}::test_trainer_with_group_adapters_and_shared_prompts_trains_as_without_sharing",
        ),
    ),
    "_save_checkpoint": Override(
        ("self", "model", "trial"),
        "writes the group statistics (pgrpo_group_stats.json) into the checkpoint before TRL's files",
        (f"{TRAINER_TESTS}::test_checkpoint_resume_restores_group_statistics_exactly",),
    ),
    "_load_optimizer_and_scheduler": Override(
        ("self", "checkpoint"),
        "restores the group statistics from the checkpoint it resumes",
        (
            f"{TRAINER_TESTS}::test_checkpoint_resume_restores_group_statistics_exactly",
            f"{TRAINER_TESTS}::test_resume_without_statistics_file_is_an_error",
        ),
    ),
    "_get_train_sampler": Override(
        ("self", "dataset"),
        "group-balanced prompt draws (group_sampling_alpha != 1) in TRL's repeat layout",
        ("tests/trainer/test_group_options.py::test_balanced_sampling_trains_on_the_groups_equally",),
    ),
    "_get_per_token_logps_and_entropies": Override(
        (
            "self",
            "model",
            "input_ids",
            "attention_mask",
            "logits_to_keep",
            "batch_size",
            "compute_entropy",
            "compute_aux_loss",
            "pixel_values",
            "image_grid_thw",
            "num_images",
            "pixel_attention_mask",
            "spatial_shapes",
            "num_tiles",
            "image_sizes",
            "token_type_ids",
            "mm_token_type_ids",
            "image_position_ids",
        ),
        "routes each chunk of a chunked forward through its rows' group adapters; CPU fast path: the head scores "
        "only completion tokens, each distinct prompt runs through the body once",
        (
            f"{ADAPTER_TESTS}::test_chunked_log_probability_forward_routes_each_chunk",
            f"{CPU_TESTS}::test_head_scores_only_completion_tokens_with_the_same_logps_and_gradients",
            f"{PREFIX_TESTS}::test_loss_forward_runs_each_prompt_once_with_the_same_logps_entropies_and_gradients",
            f"{PREFIX_TESTS}::test_group_adapters_share_a_prompt_only_within_its_adapter",
        ),
    ),
    "_compute_loss": Override(
        ("self", "model", "inputs"),
        "routes the loss forward's rows (shuffled and split by TRL) through their group adapters",
        (
            "tests/trainer/test_adapter_routing.py::test_loss_forward_rows_match_their_own_group_policy",
            f"{ADAPTER_TESTS}::test_activation_checkpointing_recomputes_the_routed_forward",
        ),
    ),
    "_load_from_checkpoint": Override(
        ("self", "resume_from_checkpoint", "model"),
        "loads the shared weights as saved without group adapters, then every group's adapter",
        ("tests/reliability/test_resume.py::test_sigkill_then_resume_reproduces_the_uninterrupted_run",),
    ),
}


def check_trl_version(version: str) -> None:
    """Raise ``ImportError`` unless ``version`` is a TRL release whose private methods we support."""
    if Version(version) not in SUPPORTED_TRL:
        raise ImportError(
            f"pgrpo overrides private GRPOTrainer methods of trl{SUPPORTED_TRL}, but trl {version} is installed; "
            f"install a supported release: pip install 'trl{SUPPORTED_TRL}'."
        )
