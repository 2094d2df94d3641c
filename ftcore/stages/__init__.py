"""The pipeline's stages as plain functions: config + input artifacts -> output artifact.

Each stage keys its output on its config section, its inputs' fingerprints and the ftflow version,
and returns the finished artifact at once when one with the same key exists. Prefect tasks wrap
these one to one; `ft train|eval|export` call them directly.
"""

from ftcore.stages.evaluate import evaluate
from ftcore.stages.fetch import fetch_dataset, fetch_model
from ftcore.stages.local import external_adapter, find_trained, preflight
from ftcore.stages.merge import merge
from ftcore.stages.preprocess import preprocess
from ftcore.stages.register import register
from ftcore.stages.table import Step, plan, run_local, run_steps, steps
from ftcore.stages.train import train

__all__ = [
    "Step",
    "evaluate",
    "external_adapter",
    "fetch_dataset",
    "fetch_model",
    "find_trained",
    "merge",
    "plan",
    "preflight",
    "preprocess",
    "register",
    "run_local",
    "run_steps",
    "steps",
    "train",
]
