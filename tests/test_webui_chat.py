"""The Chat area's vLLM backend for real: a finished tiny job loaded with vLLM (`ft serve --backend vllm`
started by the board on a free port), a multi-turn streamed conversation through the board's own chat
handler, the greedy reply equal to the transformers backend's, and the server stopped when another
model is loaded. Skips without vLLM's side env (CI installs it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from ftcore import venvs
from tests.helpers import small_config

pytest.importorskip("gradio")

needs_vllm = pytest.mark.skipif(
    not venvs.is_installed("vllm"),
    reason="vLLM's side virtualenv is not installed (`ft env install vllm`; CI installs it)",
)


def _turn(message: str, history: list[dict[str, Any]], **sampling: Any) -> list[dict[str, Any]]:
    """One exchange through the board's chat handler, as the Send button runs it; the last frame."""
    from webui import chat

    params = {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, **sampling}

    async def run() -> list[dict[str, Any]]:
        frames = []
        async for shown, _cleared in chat.respond(message, history, "You answer briefly.", **params):
            frames.append([dict(m) for m in shown])
        return frames

    frames = asyncio.run(run())
    assert frames, "nothing streamed"
    return frames[-1]


@pytest.mark.slow
@needs_vllm
def test_board_chats_with_a_finished_job_through_vllm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftcore.steps import run_local
    from webui import chat, jobs

    monkeypatch.setenv("FTFLOW_BOARD_DIR", str(tmp_path / "board"))
    cfg = small_config(tmp_path / "job", "eval.enabled=false", "registry.enabled=false", "name=vjob")
    run_local(cfg, until="merge")  # a finished job: trained, merged
    jobs.save_config(cfg, jobs.job_config("vjob"))
    try:
        said = list(chat.load("vjob", "vLLM", "English"))
        assert "ft serve --backend vllm" in said[0] and said[-1].endswith("(vLLM)"), said
        server = chat._loaded["server"]
        assert server.url.startswith("http://127.0.0.1:")
        assert server.models == ["test-model"]  # the job's registry.model_name
        assert httpx.get(server.url + "/models", timeout=30).status_code == 401  # a key of its own

        first = _turn("Hello, who are you?", [])
        assert [m["role"] for m in first] == ["user", "assistant"] and first[-1]["content"]
        second = _turn("Say it again.", first)  # the history goes with the new turn
        assert [m["role"] for m in second] == ["user", "assistant"] * 2 and second[-1]["content"]
        assert second[:2] == first

        said = list(chat.load("vjob", "transformers", "English"))  # another model: vLLM stops
        assert said[-1].endswith("(transformers)"), said
        assert not server.alive()
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url.removesuffix("/v1") + "/health", timeout=5)
        assert _turn("Hello, who are you?", []) == first  # greedy: both backends answer alike
    finally:
        chat.unload()
