"""`ft serve` and `ft chat` for real: a server process on 127.0.0.1 serving a tiny merged model (and a
LoRA adapter unmerged), checked token for token against transformers and peft in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, small_config, stop_group

KEY = "test-key-123"
FT = [sys.executable, "-m", "flows.cli"]
PROMPT_A = "Hello there"  # the served model ends this turn early (see _end_turn_early)
PROMPT_B = "What is the capital of France?"
MAX_LEN = 256  # --max-model-len: a prompt over it is cheap to write


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _start_server(
    args: list[str], log: Path, timeout_s: float = 300, port: int = 0
) -> tuple[subprocess.Popen, str]:
    """`ft serve ARGS --port PORT` (default 0: a free one) in its own process group; returns it and the
    URL it printed when ready."""
    env = {k: v for k, v in os.environ.items() if k != "FTFLOW_API_KEY"}
    out = log.with_suffix(".out")
    with out.open("wb") as stdout, log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                *FT,
                "serve",
                *args,
                "--port",
                str(port),
                "--backend",
                "transformers",
            ],  # auto: vLLM if installed
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [line for line in out.read_text().splitlines() if line.startswith("ready: ")]
        if lines:
            return proc, lines[0].split()[1]
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                stop_group(proc)
            raise RuntimeError(f"ft serve did not get ready:\n{log.read_text()}")
        time.sleep(0.2)


def _end_turn_early(model_dir: Path, tokenizer: Any) -> None:
    """Make the random model end its turn: the output row of <|eot_id|> becomes 1.05 x the row of the
    3rd token it would say to PROMPT_A, so it says <|eot_id|> exactly where it would have said that
    token (tiny-llama's output head is untied: the inputs do not change)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = _prompt_ids(tokenizer, _user(PROMPT_A))
    said = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None)
    token = said[0, len(ids) + 2].item()
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[eot] = head[token] * 1.05
    model.save_pretrained(model_dir, safe_serialization=True)


def random_lora(base: Path, out: Path, seed: int = 1) -> Path:
    """A random (not zero-initialized) LoRA adapter on `base`'s q/v projections, saved to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from ftcore.modeling import load_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_model(base, dtype="float32", device="cpu"), lora).save_pretrained(out)
    return out


def merged_with_adapter(root: Path, base: Path) -> tuple[Path, Path, Any]:
    """(merged folder, adapter `root/ad`, tokenizer): a random LoRA merged into tiny-llama `base` with
    the llama3 template, whose turn ends early on PROMPT_A (so stopping is tested for real)."""
    from ftcore.export.merge import merge_lora
    from ftcore.modeling import load_tokenizer

    adapter = random_lora(base, root / "ad")
    merged = root / "merged"
    merged.mkdir()
    merge_lora(base, adapter, merged, template="llama3")
    tokenizer = load_tokenizer(merged)
    _end_turn_early(merged, tokenizer)
    return merged, adapter, tokenizer


def _prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path):
    """A merged tiny-llama (random LoRA merged in, llama3 template) served with an adapter `ad`."""
    root = tmp_path_factory.mktemp("serve")
    merged, _, tokenizer = merged_with_adapter(root, tiny_llama)
    args = [str(merged), "--api-key", KEY, "--lora", f"ad={root / 'ad'}", "--max-model-len", str(MAX_LEN)]
    proc, url = _start_server([*args, "--log-dir", str(root / "logs")], root / "serve.log")
    try:
        yield {"url": url, "merged": merged, "adapter": root / "ad", "tokenizer": tokenizer, "root": root}
    finally:
        stop_group(proc)


def _post(served: dict, path: str, body: Any, key: str | None = KEY, **kwargs: Any) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(served["url"] + path, content=content, headers=headers, timeout=300, **kwargs)


def _reference(
    served: dict, messages: list[dict[str, str]], max_tokens: int, adapter: bool = False
) -> list[int]:
    """transformers' (or peft's) greedy answer ids, stopping at generation_config's eos ids."""
    import torch
    from transformers import GenerationConfig

    from ftcore.modeling import load_with_adapter

    model = load_with_adapter(served["merged"], served["adapter"] if adapter else None, device="cpu")
    ids = _prompt_ids(served["tokenizer"], messages)
    eos = GenerationConfig.from_pretrained(served["merged"]).eos_token_id
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos)
    return out[0, len(ids) :].tolist()


def _text(served: dict, ids: list[int]) -> str:
    return served["tokenizer"].decode(ids, skip_special_tokens=True)


def _chat(served: dict, messages: list[dict[str, str]], model: str = "merged", **params: Any) -> dict:
    body = {"model": model, "messages": messages, "temperature": 0, **params}
    response = _post(served, "/chat/completions", body)
    assert response.status_code == 200, response.text
    return response.json()


def test_greedy_chat_equals_transformers(served: dict) -> None:
    ref = _reference(served, _user(PROMPT_B), 16)
    assert len(ref) == 16  # this prompt runs to the limit
    answer = _chat(served, _user(PROMPT_B), max_tokens=16)
    assert answer["choices"][0]["message"]["content"] == _text(served, ref)
    assert answer["choices"][0]["finish_reason"] == "length"
    prompt_len = len(_prompt_ids(served["tokenizer"], _user(PROMPT_B)))
    assert answer["usage"] == {
        "prompt_tokens": prompt_len,
        "completion_tokens": 16,
        "total_tokens": prompt_len + 16,
    }


def test_stops_at_end_of_turn(served: dict) -> None:
    """The model says <|eot_id|> as its 3rd token: the server stops there, as transformers does."""
    eot = served["tokenizer"].convert_tokens_to_ids("<|eot_id|>")
    ref = _reference(served, _user(PROMPT_A), 16)
    assert ref[-1] == eot and len(ref) == 3
    answer = _chat(served, _user(PROMPT_A), max_tokens=16)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == _text(served, ref[:-1])
    assert answer["usage"]["completion_tokens"] == 3


def _events(response: Any) -> list[str]:
    return [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]


def test_streaming_chunks_concatenate_to_the_answer(served: dict) -> None:
    whole = _chat(served, _user(PROMPT_B), max_tokens=12)["choices"][0]["message"]["content"]
    body = {
        "model": "merged",
        "messages": _user(PROMPT_B),
        "temperature": 0,
        "max_tokens": 12,
        "stream": True,
    }
    body["stream_options"] = {"include_usage": True}
    response = _post(served, "/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == whole
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 12


def test_completions_and_stop_strings(served: dict) -> None:
    """A stop string ends the answer before it, streamed or not, and is never sent even in part."""
    tokenizer = served["tokenizer"]
    prompt_ids = tokenizer.encode("Once upon a time")
    body = {"model": "merged", "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
    full = _post(served, "/completions", body).json()
    text = full["choices"][0]["text"]
    assert full["usage"]["prompt_tokens"] == len(prompt_ids)
    import torch

    from ftcore.modeling import load_model

    model = load_model(served["merged"], device="cpu")
    ref = model.generate(torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert text == _text(served, ref[0, len(prompt_ids) :].tolist())
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = text[: text.find(stop)]
    stopped = _post(served, "/completions", {**body, "stop": [stop]}).json()["choices"][0]
    assert (stopped["text"], stopped["finish_reason"]) == (cut, "stop")
    streamed = _post(served, "/completions", {**body, "stop": stop, "stream": True})
    events = _events(streamed)
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == cut


def test_api_key_required(served: dict) -> None:
    import httpx

    body = {"model": "merged", "messages": _user("hi"), "max_tokens": 2}
    for key in (None, "wrong-key"):
        response = _post(served, "/chat/completions", body, key=key)
        assert response.status_code == 401
        assert "API key" in response.json()["error"]["message"]
    assert httpx.get(served["url"] + "/models", timeout=30).status_code == 401
    assert httpx.get(served["url"].removesuffix("/v1") + "/health", timeout=30).status_code == 200
    logs = "".join(p.read_text() for p in (served["root"] / "logs").glob("serve-*.log"))
    assert "POST /v1/chat/completions" in logs and KEY not in logs  # requests logged, the key never


def test_bad_requests_get_4xx_and_the_server_keeps_serving(served: dict) -> None:
    cases = [
        ("/chat/completions", "{not json", 400),
        ("/chat/completions", {"model": "nope", "messages": _user("hi")}, 404),
        ("/chat/completions", {"model": "merged"}, 400),
        ("/chat/completions", {"model": "merged", "messages": []}, 400),
        ("/chat/completions", {"model": "merged", "messages": _user("word " * 400)}, 400),
        ("/completions", {"model": "merged", "prompt": "hi", "max_tokens": MAX_LEN * 2}, 400),
        ("/completions", {"model": "merged", "prompt": "hi", "temperature": -1}, 400),
        ("/completions", {"model": "merged", "prompt": "hi", "n": 3}, 400),
    ]
    for path, body, status in cases:
        response = _post(served, path, body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["message"]
    assert "maximum context length is 256" in _post(served, *cases[4][:2]).json()["error"]["message"]
    assert _chat(served, _user(PROMPT_B), max_tokens=2)["choices"][0]["finish_reason"] == "length"


def test_concurrent_requests_all_succeed(served: dict) -> None:
    expected = _chat(served, _user(PROMPT_B), max_tokens=8)["choices"][0]["message"]["content"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _chat(served, _user(PROMPT_B), max_tokens=8), range(8)))
    assert [a["choices"][0]["message"]["content"] for a in answers] == [expected] * 8


def test_lora_served_unmerged_equals_peft(served: dict) -> None:
    import httpx

    models = httpx.get(served["url"] + "/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert [m["id"] for m in models.json()["data"]] == ["merged", "ad"]
    ref = _reference(served, _user(PROMPT_B), 12, adapter=True)
    answer = _chat(served, _user(PROMPT_B), model="ad", max_tokens=12)["choices"][0]["message"]["content"]
    assert answer == _text(served, ref)
    assert answer != _text(served, _reference(served, _user(PROMPT_B), 12))  # the adapter changes it


def test_chat_client_streams_and_keeps_history(served: dict) -> None:
    lines = "\n".join([PROMPT_B, PROMPT_A, "/reset", PROMPT_A, "/exit", "never sent"]) + "\n"
    cmd = [*FT, "chat", served["url"], "--api-key", KEY, "--model", "merged", "--max-tokens", "6"]
    done = subprocess.run(
        [*cmd, "--temperature", "0"], cwd=REPO, input=lines, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    first = _chat(served, _user(PROMPT_B), max_tokens=6)["choices"][0]["message"]["content"]
    history = [*_user(PROMPT_B), {"role": "assistant", "content": first}, *_user(PROMPT_A)]
    second = _chat(served, history, max_tokens=6)["choices"][0]["message"]["content"]
    fresh = _chat(served, _user(PROMPT_A), max_tokens=6)["choices"][0]["message"]["content"]
    assert second != fresh  # the history reached the model
    assert done.stdout.split("\n")[:3] == [first, second, fresh]
    assert "history cleared" in done.stderr


def test_serve_refuses_bad_targets_and_open_binds(
    tmp_path: Path, served: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused in milliseconds, before a model is loaded, with the field to fix."""
    from flows.cli import main

    monkeypatch.delenv("FTFLOW_API_KEY", raising=False)
    merged = str(served["merged"])
    cases = [
        ([merged, "--host", "0.0.0.0"], "needs an API key"),
        ([str(served["adapter"])], "is a LoRA adapter"),
        ([str(tmp_path / "nothing")], "not a config file"),
        ([merged, "--lora", "ad"], "expected NAME=PATH"),
        ([merged, "--lora", f"merged={served['adapter']}"], "already taken"),
        (["models:/m@champion"], "MLFLOW_TRACKING_URI"),
    ]
    for args, message in cases:
        assert main(["serve", *args]) == 2
        assert message in capsys.readouterr().err


def test_stop_string_holdback() -> None:
    from ftcore.serve.backend import _find_stop, _safe_end

    assert _safe_end("hello wor", ["world"]) == len("hello ")
    assert _safe_end("hello", ["xyz"]) == 5
    assert _safe_end("ab\ufffd", []) == 2
    assert _safe_end("xab", ["bc", "abcd"]) == 1  # the longest possible start of any stop is held
    assert _find_stop("say STOP now", ["STOP", "now"], 0) == 4


@pytest.mark.slow
def test_serve_registry_alias_after_a_job(tmp_path: Path) -> None:
    """`ft serve models:/NAME@candidate` downloads the version a run_local job registered and serves
    what transformers generates from that job's merged model; `ft serve CFG` finds the same job's
    model under serve.model_alias, else (no champion yet) in its workdir."""
    import httpx
    import torch

    from ftcore.config import dump_config
    from ftcore.modeling import load_model, load_tokenizer
    from ftcore.serve import resolve_target
    from ftcore.steps import run_local

    cfg = small_config(tmp_path / "job", "eval.enabled=false")
    outputs = run_local(cfg)
    uri = outputs["registered"].metadata["tracking_uri"]
    merged = Path(outputs["merged"].path)
    job = tmp_path / "job.yaml"
    job.write_text(dump_config(cfg))
    assert resolve_target(str(job)).model_path == merged  # no champion: the workdir's merged model
    registered = resolve_target(str(job), ["serve.model_alias=candidate"])
    assert registered.model_path != merged and registered.name == "test-model"
    assert (registered.model_path / "model.safetensors").read_bytes() == (
        merged / "model.safetensors"
    ).read_bytes()
    proc, url = _start_server(["models:/test-model@candidate", "--tracking-uri", uri], tmp_path / "serve.log")
    try:
        tokenizer, model = load_tokenizer(merged), load_model(merged, device="cpu")
        ids = _prompt_ids(tokenizer, _user(PROMPT_B))
        out = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)
        body = {"model": "test-model", "messages": _user(PROMPT_B), "max_tokens": 10, "temperature": 0}
        answer = httpx.post(url + "/chat/completions", json=body, timeout=300).json()
        assert answer["choices"][0]["message"]["content"] == tokenizer.decode(
            out[0, len(ids) :].tolist(), skip_special_tokens=True
        )
        os.killpg(proc.pid, signal.SIGTERM)  # a graceful stop: exit status 0, said in the log
        assert proc.wait(timeout=60) == 0
        assert "server stopped" in (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            stop_group(proc)
