"""Serving: an OpenAI-compatible server (transformers backend now, vLLM behind the same API later),
what `ft serve` resolves a target to, and the `ft chat` client."""

from ftcore.serve.backend import BACKENDS, TransformersBackend, pick_backend
from ftcore.serve.target import ServeTarget, resolve_target

__all__ = ["BACKENDS", "ServeTarget", "TransformersBackend", "pick_backend", "resolve_target"]
