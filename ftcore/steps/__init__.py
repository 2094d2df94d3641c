"""The pipeline's steps as plain functions: config + input artifacts -> output artifact.

Each step keys its output on its config section, its inputs' fingerprints and the ftflow version,
and returns the finished artifact at once when one with the same key exists. Prefect tasks wrap
these one to one; `ft train|eval|export` call them directly.
"""

from ftcore.steps.evaluate import evaluate
from ftcore.steps.fetch import fetch_dataset, fetch_model
from ftcore.steps.local import external_adapter, find_trained, preflight
from ftcore.steps.merge import merge
from ftcore.steps.preprocess import preprocess
from ftcore.steps.promote import promote
from ftcore.steps.push import push
from ftcore.steps.quantize import quantize
from ftcore.steps.register import register
from ftcore.steps.table import Step, plan, run_local, run_steps, steps
from ftcore.steps.train import train

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
    "promote",
    "push",
    "quantize",
    "register",
    "run_local",
    "run_steps",
    "steps",
    "train",
]
