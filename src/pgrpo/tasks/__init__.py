"""Preference-grouped tasks: ``personas``, ``movielens``, ``reviews``, ``tones`` and user-supplied ones."""

from pgrpo.tasks import (
    movielens,  # noqa: F401  (registers "movielens")
    personas,  # noqa: F401  (registers "personas")
    reviews,  # noqa: F401  (registers "reviews")
    tones,  # noqa: F401  (registers "tones")
)
from pgrpo.tasks.base import TASKS, GroupInfo, Task, completion_text, register_task, task_from_dataset
from pgrpo.tasks.registry import build_task, find_task

__all__ = [
    "TASKS",
    "GroupInfo",
    "Task",
    "build_task",
    "completion_text",
    "find_task",
    "register_task",
    "task_from_dataset",
]
