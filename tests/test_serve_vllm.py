"""`ft serve --backend vllm` for real: vLLM's CPU server from its side virtualenv, started once for the
module through ftcore.serve.start_server, checked token for token against transformers / peft and
against ftflow's transformers backend (same model, same requests)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ftcore import venvs
from tests.test_serve import KEY, MAX_LEN, PROMPT_A, PROMPT_B, _prompt_ids, _user, merged_with_adapter

needs_vllm = pytest.mark.skipif(
    not venvs.is_installed("vllm"),
    reason="vLLM's side virtualenv is not installed (`ft env install vllm`; CI installs it)",
)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> dict[str, Any]:
    """A merged tiny-llama (llama3 template, ends PROMPT_A's turn early) and a LoRA adapter `ad`."""
    root = tmp_path_factory.mktemp("vllm")
    merged, adapter, tokenizer = merged_with_adapter(root, tiny_llama)
    return {"root": root, "merged": merged, "adapter": adapter, "tokenizer": tokenizer}


def _start(dirs: dict[str, Any], backend: str, extra: list[str] | None = None):
    from ftcore.serve import start_server

    return start_server(
        dirs["merged"],
        dirs["root"] / f"logs-{backend}",
        backend=backend,
        api_key=KEY,
        loras={"ad": dirs["adapter"]},
        max_model_len=MAX_LEN,
        extra_args=extra,
    )


@pytest.fixture(scope="module")
def vllm(model_dirs: dict[str, Any]):
    handle = _start(model_dirs, "vllm", ["--enforce-eager"])
    try:
        yield {**model_dirs, "url": handle.url, "handle": handle}
    finally:
        handle.stop()


def _chat(url: str, messages: list[dict[str, str]], model: str = "merged", key: str | None = KEY, **params):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": messages, "temperature": 0, **params}
    return httpx.post(url + "/chat/completions", json=body, headers=headers, timeout=600)


def _answer(url: str, messages: list[dict[str, str]], model: str = "merged", **params) -> dict:
    response = _chat(url, messages, model, **params)
    assert response.status_code == 200, response.text
    return response.json()


def _reference(dirs: dict[str, Any], messages: list[dict[str, str]], max_tokens: int, adapter: bool = False):
    """transformers' (or peft's) greedy answer ids, stopping at generation_config's eos ids."""
    import torch
    from transformers import GenerationConfig

    from ftcore.modeling import load_with_adapter

    model = load_with_adapter(dirs["merged"], dirs["adapter"] if adapter else None, device="cpu")
    ids = _prompt_ids(dirs["tokenizer"], messages)
    eos = GenerationConfig.from_pretrained(dirs["merged"]).eos_token_id
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos)
    return out[0, len(ids) :].tolist()


def _text(dirs: dict[str, Any], ids: list[int]) -> str:
    return dirs["tokenizer"].decode(ids, skip_special_tokens=True)


@pytest.mark.slow
@needs_vllm
def test_models_are_the_base_and_the_adapter(vllm: dict) -> None:
    assert vllm["handle"].models == ["merged", "ad"]
    response = httpx.get(vllm["url"] + "/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert [m["id"] for m in response.json()["data"]] == ["merged", "ad"]


@pytest.mark.slow
@needs_vllm
def test_greedy_chat_equals_transformers(vllm: dict) -> None:
    ref = _reference(vllm, _user(PROMPT_B), 16)
    assert len(ref) == 16
    answer = _answer(vllm["url"], _user(PROMPT_B), max_tokens=16)
    assert answer["choices"][0]["message"]["content"] == _text(vllm, ref)
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["prompt_tokens"] == len(_prompt_ids(vllm["tokenizer"], _user(PROMPT_B)))


@pytest.mark.slow
@needs_vllm
def test_stops_at_the_templates_end_of_turn(vllm: dict) -> None:
    """<|eot_id|> is in the merged model's generation_config: vLLM stops there as transformers does."""
    eot = vllm["tokenizer"].convert_tokens_to_ids("<|eot_id|>")
    ref = _reference(vllm, _user(PROMPT_A), 16)
    assert ref[-1] == eot and len(ref) == 3
    answer = _answer(vllm["url"], _user(PROMPT_A), max_tokens=16)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"] == _text(vllm, ref[:-1])
    assert answer["usage"]["completion_tokens"] == 3


@pytest.mark.slow
@needs_vllm
def test_lora_served_unmerged_equals_peft(vllm: dict) -> None:
    ref = _reference(vllm, _user(PROMPT_B), 12, adapter=True)
    answer = _answer(vllm["url"], _user(PROMPT_B), model="ad", max_tokens=12)["choices"][0]
    assert answer["message"]["content"] == _text(vllm, ref)
    assert ref != _reference(vllm, _user(PROMPT_B), 12)  # the adapter changes the answer


@pytest.mark.slow
@needs_vllm
def test_32_concurrent_requests_all_succeed(vllm: dict) -> None:
    """Base and adapter requests batched together all complete. (Their text is not compared with the
    one-at-a-time answers: vLLM's batched kernels round differently, and a random tiny model's
    near-tied logits then flip greedy picks; the equality tests above run one request at a time.)"""
    models = ["merged", "ad"] * 16
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda m: _answer(vllm["url"], _user(PROMPT_B), m, max_tokens=8), models))
    assert [a["model"] for a in answers] == models
    assert all(a["usage"]["completion_tokens"] == 8 for a in answers)
    assert all(a["choices"][0]["finish_reason"] == "length" for a in answers)
    assert all(a["choices"][0]["message"]["content"] for a in answers)


@pytest.mark.slow
@needs_vllm
def test_bad_requests_get_4xx_and_the_server_keeps_serving(vllm: dict) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    cases = [
        ("/chat/completions", "{not json"),
        ("/chat/completions", {"model": "nope", "messages": _user("hi")}),
        ("/chat/completions", {"model": "merged", "messages": _user("word " * 400)}),
        ("/completions", {"model": "merged", "prompt": "hi", "max_tokens": MAX_LEN * 2}),
    ]
    for path, body in cases:
        content = body if isinstance(body, str) else json.dumps(body)
        response = httpx.post(vllm["url"] + path, content=content, headers=headers, timeout=60)
        assert 400 <= response.status_code < 500, (body, response.text)
        error = response.json().get("error") or response.json()
        assert error.get("message") or error.get("detail"), response.text
    assert _answer(vllm["url"], _user(PROMPT_B), max_tokens=2)["choices"][0]["finish_reason"] == "length"


@pytest.mark.slow
@needs_vllm
def test_api_key_required_and_never_logged(vllm: dict) -> None:
    for key in (None, "wrong-key"):
        assert _chat(vllm["url"], _user("hi"), key=key, max_tokens=2).status_code == 401
    assert httpx.get(vllm["url"].removesuffix("/v1") + "/health", timeout=30).status_code == 200
    logs = list((vllm["root"] / "logs-vllm").iterdir())
    assert any(p.name.startswith("vllm-") for p in logs)
    assert all(KEY not in p.read_text(errors="replace") for p in logs if p.is_file())


@pytest.mark.slow
@needs_vllm
def test_same_answers_as_the_transformers_backend(vllm: dict) -> None:
    """Both backends, each started with start_server, answer the same greedy requests alike."""
    with _start(vllm, "transformers") as other:
        assert other.models == ["merged", "ad"]
        for model, prompt in (("merged", PROMPT_B), ("ad", PROMPT_B), ("merged", PROMPT_A)):
            ours = _answer(other.url, _user(prompt), model, max_tokens=10)["choices"][0]
            theirs = _answer(vllm["url"], _user(prompt), model, max_tokens=10)["choices"][0]
            assert (theirs["message"]["content"], theirs["finish_reason"]) == (
                ours["message"]["content"],
                ours["finish_reason"],
            )
        assert other.stop() == 0


@pytest.mark.slow
@needs_vllm
def test_sigterm_stops_vllm_gracefully(vllm: dict) -> None:
    """Last: `ft serve` forwards SIGTERM to vLLM, exits 0 and says so; nothing listens afterwards."""
    handle = vllm["handle"]
    assert handle.stop() == 0
    assert "server stopped" in handle.log_path.read_text()
    with pytest.raises(httpx.HTTPError):
        httpx.get(vllm["url"].removesuffix("/v1") + "/health", timeout=5)


def test_auto_picks_vllm_when_its_interpreter_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from ftcore.serve.backend import backend_name

    monkeypatch.setenv("FTFLOW_VLLM_PYTHON", str(tmp_path / "none" / "python"))
    assert backend_name("auto") == "transformers"
    assert backend_name("vllm") == "vllm"
    assert backend_name("auto", vllm_python=sys.executable) == "transformers"  # the variable wins
    monkeypatch.setenv("FTFLOW_VLLM_PYTHON", sys.executable)
    assert backend_name("auto") == "vllm"
    assert backend_name("transformers") == "transformers"
    monkeypatch.delenv("FTFLOW_VLLM_PYTHON")
    assert backend_name("auto", vllm_python=sys.executable) == "vllm"  # serve.vllm_python


def test_missing_vllm_is_a_clear_error_before_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture
) -> None:
    from flows.cli import main

    monkeypatch.setenv("FTFLOW_VLLM_PYTHON", str(tmp_path / "none" / "python"))
    args = ["serve", str(tiny_llama), "--backend", "vllm", "--log-dir", str(tmp_path / "logs")]
    assert main(args) == 2
    assert "ft env install vllm" in capsys.readouterr().err


def test_vllm_command_line_carries_no_key(tmp_path: Path) -> None:
    """The key goes to vLLM in its environment only; adapters get a LoRA rank slot that fits them."""
    from ftcore.serve.vllm import KEY_ENV, vllm_command, vllm_env

    adapter = tmp_path / "ad"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 24}))
    cmd = vllm_command(Path("py"), tmp_path, "m", {"ad": adapter}, "127.0.0.1", 9, 256, "float32")
    assert cmd[cmd.index("--max-lora-rank") + 1] == "32"
    assert cmd[cmd.index("--lora-modules") + 1] == f"ad={adapter}"
    env = vllm_env("s3cret", tmp_path, 1.5)
    assert env[KEY_ENV] == "s3cret" and "s3cret" not in " ".join(cmd)
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path) and "PYTHONPATH" not in env


def test_llamafactory_inference_keys_map_to_serve() -> None:
    from ftcore.config.llamafactory import flat_to_nested

    raw = {"stage": "sft", "infer_backend": "huggingface", "vllm_maxlen": 1024, "vllm_enforce_eager": True}
    serve = flat_to_nested(raw)["serve"]
    assert serve == {"backend": "transformers", "max_model_len": 1024, "vllm_args": ["--enforce-eager"]}
    assert flat_to_nested({"stage": "sft", "infer_backend": "vllm"})["serve"] == {"backend": "vllm"}
