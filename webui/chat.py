"""The Chat area: one model at a time, loaded in the board's process with ftcore's transformers
serving backend (inference only), or a running `ft serve` endpoint over its OpenAI API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ftcore.errors import FtflowError

_loaded: dict[str, Any] = {}  # "backend" (TransformersBackend) or "client" (ChatClient, model name)


def _target(source: str):  # -> ServeTarget
    """A board job's model (its registry alias, else its merged model) or a models:/ URI."""
    from ftcore.serve.target import resolve_target
    from webui import jobs

    source = source.strip()
    if source.startswith("models:/"):
        return resolve_target(source, tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"))
    path = jobs.job_config(source)
    if not path.is_file():
        raise FtflowError(f"{source!r}: not a board job, a models:/NAME@ALIAS URI or an http(s) URL")
    return resolve_target(str(path))


def load(source: str) -> str:
    """Load the model `source` names, replacing the one loaded before; returns what was loaded."""
    unload()
    try:
        if source.strip().startswith(("http://", "https://")):
            from ftcore.serve.client import ChatClient

            client = ChatClient(source.strip(), os.environ.get("FTFLOW_API_KEY"))
            _loaded.update(client=client, model=client.first_model())
            return f"endpoint {source} (model {_loaded['model']})"
        from ftcore.serve.backend import TransformersBackend

        target = _target(source)
        backend = TransformersBackend(target.model_path, target.name, target.loras, target.trust_remote_code)
        _loaded["backend"] = backend
        return f"loaded `{target.model_path}` as {target.name}"
    except (FtflowError, OSError) as exc:
        return f"**{exc}**"
    except Exception as exc:  # an endpoint that does not answer
        return f"**{source}: {type(exc).__name__}: {exc}**"


def unload() -> None:
    backend = _loaded.pop("backend", None)
    if backend is not None:
        backend.close()
    _loaded.clear()


def _text(content: Any) -> str:
    """A chat message's text (Gradio may hand content as a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    return str(content or "")


async def respond(
    message: str,
    history: list[dict[str, Any]],
    system: str,
    max_tokens: float,
    temperature: float,
    top_p: float,
) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
    """Stream the answer to `message` after the conversation so far (multi-turn)."""
    turns = [{"role": m["role"], "content": _text(m["content"])} for m in history or []]
    asked = [*([{"role": "system", "content": system}] if system else []), *turns]
    asked.append({"role": "user", "content": message})
    shown = [*turns, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    if not _loaded:
        shown[-1]["content"] = "(load a model first)"
        yield shown, ""
        return
    if "client" in _loaded:
        params = {"max_tokens": int(max_tokens), "temperature": temperature, "top_p": top_p}
        for piece in _loaded["client"].stream_chat(_loaded["model"], asked, **params):
            shown[-1]["content"] += piece
            yield shown, ""
        return
    from ftcore.serve.backend import RequestError, Sampling

    backend = _loaded["backend"]
    try:
        ids = backend.chat_prompt(asked, {})
    except RequestError as exc:
        shown[-1]["content"] = f"({exc})"
        yield shown, ""
        return
    sampling = Sampling(max_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p))
    async for chunk in backend.generate(backend.served_name, ids, sampling):
        shown[-1]["content"] += chunk.text
        yield shown, ""
    if not shown[-1]["content"]:
        shown[-1]["content"] = "(empty answer: the model ended at once)"
        yield shown, ""
