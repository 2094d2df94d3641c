"""Prefect tasks, one per pipeline step (`TASKS[name]`, or `from tasks import train`)."""

from typing import Any

from tasks.steps import TASKS, step_task

__all__ = ["TASKS", "step_task"]


def __getattr__(name: str) -> Any:
    """`tasks.train`, `from tasks import register`: the task of that step."""
    if name in TASKS:
        return TASKS[name]
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
