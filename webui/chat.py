"""The Chat area's model: one at a time, from a board job, a registry version or a running `ft serve`.

Backends: transformers loads the model in the board's process with ftcore's serving backend
(inference only); vLLM starts `ft serve --backend vllm` for it as a board-managed child on 127.0.0.1
(a free port, a random API key) and chats through its OpenAI API, like a URL of a running server.
The child is stopped when the model is unloaded, another one is loaded, or the board exits.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from ftcore.errors import FtflowError
from webui import i18n

BACKENDS = ("transformers", "vLLM")
# "backend" (TransformersBackend), or "client" + "model" (ChatClient, served name) and, for vLLM, "server"
_loaded: dict[str, Any] = {}
_lock = threading.Lock()


def vllm_unavailable() -> str | None:
    """Why the vLLM backend cannot start here (its side env is missing), or None."""
    from ftcore.serve.vllm import vllm_python

    try:
        vllm_python()
    except FtflowError as exc:
        return str(exc)
    return None


def _tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI")


def _job_config(source: str) -> Path:
    from webui import jobs

    path = jobs.job_config(source)
    if not source or not path.is_file():
        raise FtflowError(f"{source!r}: not a board job, a models:/NAME@ALIAS URI or an http(s) URL")
    return path


def _target(source: str):  # -> ServeTarget
    """A board job's model (its registry alias, else its merged model) or a models:/ URI."""
    from ftcore.serve.target import resolve_target

    if source.startswith("models:/"):
        return resolve_target(source, tracking_uri=_tracking_uri())
    return resolve_target(str(_job_config(source)))


def _start_vllm(source: str):  # -> ServerHandle
    """`ft serve --backend vllm` on 127.0.0.1, a free port and a fresh key; ready when it returns.
    A job's config is served as `ft serve CFG` serves it (its serve section, alias, adapters)."""
    import torch

    from ftcore.serve import start_server
    from webui import jobs

    extra = [] if torch.cuda.is_available() else ["--enforce-eager"]  # CPU: ready in ~20 s, not ~50
    if source.startswith("models:/"):  # the version downloaded here (once), its folder served
        got = _target(source)
        what: dict[str, Any] = {"target": got.model_path, "served_model_name": got.name, "loras": got.loras}
        logs = source[len("models:/") :].replace("@", "-")
    else:
        what, logs = {"target": _job_config(source)}, source
    return start_server(
        **what,
        log_dir=jobs.board_dir() / ".chat" / logs,
        backend="vllm",
        host="127.0.0.1",
        port=0,
        api_key=secrets.token_urlsafe(24),
        extra_args=extra,
    )


def load(source: str, backend: str = "transformers", language: str = "en") -> Iterator[str]:
    """Load the model `source` names with `backend`, replacing the one loaded before; yields what it
    is doing, then what was loaded (or the error)."""
    lang = i18n.lang_code(language)
    source = source.strip()
    unload()
    try:
        if source.startswith(("http://", "https://")):
            from ftcore.serve.client import ChatClient

            client = ChatClient(source, os.environ.get("FTFLOW_API_KEY"))
            model = client.first_model()
            with _lock:
                _loaded.update(client=client, model=model)
            yield i18n.ui("chat_endpoint", lang).format(url=source, model=model)
            return
        if backend == "vLLM":
            reason = vllm_unavailable()
            if reason:
                yield f"**{reason}**"
                return
            if not source.startswith("models:/"):
                _job_config(source)  # a bad name fails now, not after a server start
            yield i18n.ui("chat_starting", lang).format(source=source)
            from ftcore.serve.client import ChatClient

            server = _start_vllm(source)
            with _lock:
                _loaded.update(server=server, client=ChatClient(server.url, server.api_key))
                _loaded["model"] = server.models[0]
            yield i18n.ui("chat_loaded", lang).format(path=server.url, name=server.models[0], backend="vLLM")
            return
        from ftcore.serve.backend import TransformersBackend

        target = _target(source)
        served = TransformersBackend(target.model_path, target.name, target.loras, target.trust_remote_code)
        with _lock:
            _loaded["backend"] = served
        yield i18n.ui("chat_loaded", lang).format(path=target.model_path, name=target.name, backend=backend)
    except (FtflowError, OSError) as exc:
        yield f"**{exc}**"
    except Exception as exc:  # an endpoint that does not answer
        yield f"**{source}: {type(exc).__name__}: {exc}**"


def unload(language: str = "en") -> str:
    """Free the model (a vLLM child is stopped: SIGTERM, then SIGKILL after its grace)."""
    with _lock:
        backend, server = _loaded.pop("backend", None), _loaded.pop("server", None)
        _loaded.clear()
    if backend is not None:
        backend.close()
    if server is not None:
        server.stop()
    return i18n.ui("chat_unloaded", i18n.lang_code(language))


atexit.register(unload)  # the board exits: no vLLM server outlives it (the child also watches us)


def _text(content: Any) -> str:
    """A chat message's text (Gradio may hand content as a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    return str(content or "")


async def _in_thread(pieces: Callable[[], Iterator[str]]) -> AsyncIterator[str]:
    """Iterate a blocking stream (the HTTP client's) in a thread, so the board's event loop (its timer,
    other tabs) keeps running while an answer streams."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def pump() -> None:
        try:
            for piece in pieces():
                loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
        except Exception as exc:  # handed to the caller
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

    threading.Thread(target=pump, daemon=True).start()
    while True:
        kind, value = await queue.get()
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value


async def respond(
    message: str,
    history: list[dict[str, Any]],
    system: str,
    max_tokens: float,
    temperature: float,
    top_p: float,
    language: str = "en",
) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
    """Stream the answer to `message` after the conversation so far (multi-turn)."""
    lang = i18n.lang_code(language)
    turns = [{"role": m["role"], "content": _text(m["content"])} for m in history or []]
    asked = [*([{"role": "system", "content": system}] if system else []), *turns]
    asked.append({"role": "user", "content": message})
    shown = [*turns, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    loaded = dict(_loaded)
    if not loaded:
        shown[-1]["content"] = i18n.ui("chat_no_model", lang)
        yield shown, ""
        return
    if "client" in loaded:
        from ftcore.serve.client import ChatError

        params = {"max_tokens": int(max_tokens), "temperature": float(temperature), "top_p": float(top_p)}
        client, model = loaded["client"], loaded["model"]
        try:
            async for piece in _in_thread(lambda: client.stream_chat(model, asked, **params)):
                shown[-1]["content"] += piece
                yield shown, ""
        except ChatError as exc:
            shown[-1]["content"] += f"({exc})"
            yield shown, ""
            return
    else:
        from ftcore.serve.backend import RequestError, Sampling

        backend = loaded["backend"]
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
        shown[-1]["content"] = i18n.ui("chat_empty", lang)
        yield shown, ""
