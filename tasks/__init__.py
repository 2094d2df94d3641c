"""Prefect tasks, one per pipeline stage, each a thin shell around one ftcore.stages function."""

from tasks.stages import evaluate, fetch_dataset, fetch_model, merge, preprocess, register, train

__all__ = ["evaluate", "fetch_dataset", "fetch_model", "merge", "preprocess", "register", "train"]
