"""Serving: an OpenAI-compatible server (transformers backend in process, vLLM from its own virtualenv,
same API), what `ft serve` resolves a target to, starting one in the background, and `ft chat`."""

from ftcore.serve.backend import BACKENDS, TransformersBackend, pick_backend
from ftcore.serve.process import ServerHandle, start_server
from ftcore.serve.target import ServeTarget, resolve_target

__all__ = [
    "BACKENDS",
    "ServeTarget",
    "ServerHandle",
    "TransformersBackend",
    "pick_backend",
    "resolve_target",
    "start_server",
]
