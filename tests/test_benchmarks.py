"""Benchmarks through lm-evaluation-harness (eval.tasks): ftflow's own ftflow_mc task for real, in the
evaluate step (base and tuned with its LoRA adapter) and against a real `ft serve` process, whose
/v1/completions echo + logprobs are checked against a direct forward pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftcore import steps
from ftcore.errors import ConfigError, ServiceUnavailableError
from ftcore.evaluate import benchmarks
from tests.helpers import prepared_inputs, small_config, stop_group
from tests.test_serve import KEY, _start_server, random_lora

LIMIT = 12  # questions per task: enough for accuracies to differ between models, quick on CPU


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path):
    """`ft serve` of tiny-llama with an unmerged random LoRA adapter `ad`, behind an API key."""
    root = tmp_path_factory.mktemp("bench-serve")
    random_lora(tiny_llama, root / "ad", seed=3)
    args = [str(tiny_llama), "--api-key", KEY, "--lora", f"ad={root / 'ad'}", "--log-dir", str(root / "logs")]
    proc, url = _start_server(args, root / "serve.log")
    try:
        yield {"url": url, "model": tiny_llama, "adapter": root / "ad"}
    finally:
        stop_group(proc)


def _complete(server: dict, **body: Any) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {KEY}"}
    reply = httpx.post(server["url"] + "/completions", json=body, headers=headers, timeout=300)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _forward_logprobs(model_dir: Path, ids: list[int], adapter: Path | None = None) -> Any:
    import torch

    from ftcore.modeling import load_with_adapter

    model = load_with_adapter(model_dir, adapter, device="cpu")
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)


@pytest.mark.parametrize("model", ["base", "ad"])
def test_echo_logprobs_equal_a_forward_pass(server: dict, model: str) -> None:
    from ftcore.modeling import load_tokenizer

    ids = load_tokenizer(server["model"]).encode("The capital of France is Paris")
    name = None if model == "base" else "ad"
    logp = _forward_logprobs(server["model"], ids, server["adapter"] if name else None)

    pick = {"model": name} if name else {}  # no model: the server's base
    body = {"prompt": [ids], "max_tokens": 0, "echo": True, "logprobs": 3, "temperature": 0}
    choice = _complete(server, **pick, **body)["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(ids) and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    for pos in range(1, len(ids)):
        assert lp["token_logprobs"][pos] == pytest.approx(logp[pos - 1, ids[pos]].item(), abs=1e-4)
        top = sorted(lp["top_logprobs"][pos].values(), reverse=True)
        expected = logp[pos - 1].topk(3).values.tolist()
        assert top[0] == pytest.approx(expected[0], abs=1e-4) and len(top) <= 3

    # lm-eval's request: echo, one generated token, logprobs 1; batched prompts get one choice each
    two = _complete(server, **pick, prompt=[ids, ids[:4]], max_tokens=1, echo=True, logprobs=1, temperature=0)
    first, second = sorted(two["choices"], key=lambda c: c["index"])
    assert len(first["logprobs"]["token_logprobs"]) == len(ids) + 1
    assert len(second["logprobs"]["token_logprobs"]) == 5
    greedy = int(logp[-1].argmax())
    assert first["logprobs"]["token_logprobs"][-1] == pytest.approx(logp[-1, greedy].item(), abs=1e-4)
    assert first["logprobs"]["token_logprobs"][1:-1] == pytest.approx(lp["token_logprobs"][1:], abs=1e-5)

    # without echo: the completion's tokens only
    plain = _complete(server, **pick, prompt=ids, max_tokens=3, logprobs=0, temperature=0)["choices"][0]
    values = plain["logprobs"]["token_logprobs"]
    assert 1 <= len(values) <= 3 and all(v <= 0 for v in values)
    assert plain["logprobs"]["text_offset"][0] == len(load_tokenizer(server["model"]).decode(ids))


def test_ftflow_mc_served_equals_in_process(server: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same model scored in process (HFLM) and through `ft serve` (local-completions): greedy
    loglikelihoods are deterministic, so the accuracies are equal."""
    from ftcore.modeling import load_model, load_tokenizer

    model, tokenizer = load_model(server["model"], device="cpu"), load_tokenizer(server["model"])
    local = benchmarks.run(benchmarks.in_process_lm(model, tokenizer, 4), ["ftflow_mc"], 0, LIMIT)
    monkeypatch.setenv(benchmarks.API_KEY_ENV, KEY)
    lm = benchmarks.endpoint_lm(server["url"], None, server["model"], 4)
    remote = benchmarks.run(lm, ["ftflow_mc"], 0, LIMIT)
    assert 0.0 <= local["metrics"]["ftflow_mc_acc"] <= 1.0
    assert remote["metrics"] == local["metrics"]
    assert remote["results"]["n-samples"]["ftflow_mc"]["effective"] == LIMIT

    monkeypatch.setenv(benchmarks.API_KEY_ENV, "wrong-key")
    with pytest.raises(ServiceUnavailableError, match="FTFLOW_API_KEY"):
        benchmarks.endpoint_lm(server["url"], None, server["model"], 4)


def test_evaluate_step_against_an_endpoint_is_never_cached(
    server: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval.endpoint: the step's benchmarks run against the server (served/...), not in process, and
    again on every call, since the model behind a URL can change."""
    monkeypatch.setenv(benchmarks.API_KEY_ENV, KEY)
    cfg = small_config(
        tmp_path,
        model={"name_or_path": "builtin:tiny-llama"},
        eval={"tasks": ["ftflow_mc"], "benchmark_limit": 4, "endpoint": server["url"]},
    )
    model, data = prepared_inputs(cfg)
    first = steps.evaluate(cfg, model, data, None)
    assert 0.0 <= first.metadata["metrics"]["served/ftflow_mc_acc"] <= 1.0
    assert "base/ftflow_mc_acc" not in first.metadata["metrics"]
    saved = json.loads((Path(first.path) / "benchmarks.json").read_text(encoding="utf-8"))
    assert saved["served"]["n-samples"]["ftflow_mc"]["effective"] == 4
    again = steps.evaluate(cfg, model, data, None)
    assert again.path != first.path and again.metadata["key"] != first.metadata["key"]


def test_evaluate_step_benchmarks_base_and_tuned(tmp_path: Path) -> None:
    """ftflow_mc (and its Chinese part) in the evaluate step for base and the LoRA-tuned model: scores
    in the metrics, lm-eval's results in benchmarks.json, both logged to the job's MLflow run."""
    from mlflow import MlflowClient

    cfg = small_config(
        tmp_path, eval={"tasks": "ftflow_mc,ftflow_mc_zh", "benchmark_limit": LIMIT, "num_fewshot": 1}
    )
    model, data = prepared_inputs(cfg)
    trained = steps.train(cfg, model, data)
    result = steps.evaluate(cfg, model, data, trained)
    metrics = result.metadata["metrics"]
    for who in ("base", "tuned"):
        for task in ("ftflow_mc", "ftflow_mc_zh"):
            assert 0.0 <= metrics[f"{who}/{task}_acc"] <= 1.0
    saved = json.loads((Path(result.path) / "benchmarks.json").read_text(encoding="utf-8"))
    assert saved["tuned"]["n-shot"]["ftflow_mc"] == 1
    assert saved["base"]["results"]["ftflow_mc_zh"]["acc,none"] == metrics["base/ftflow_mc_zh_acc"]

    client = MlflowClient(f"sqlite:///{cfg.workdir_path}/mlflow.db")
    run = client.get_run(trained.metadata["mlflow_run_id"])
    assert run.data.metrics["eval/tuned/ftflow_mc_acc"] == metrics["tuned/ftflow_mc_acc"]
    logged = [a.path for a in client.list_artifacts(run.info.run_id, "eval")]
    assert "eval/benchmarks.json" in logged


def test_unknown_task_is_a_config_error(tmp_path: Path) -> None:
    """Named by the preflight, before any data is parsed or model loaded."""
    from ftcore.steps.local import preflight

    with pytest.raises(ConfigError, match=r"eval\.tasks: unknown lm-eval task\(s\) no_such_benchmark"):
        benchmarks.check_tasks(["ftflow_mc", "no_such_benchmark"])
    with pytest.raises(ConfigError, match=r"eval\.tasks: unknown lm-eval task\(s\) mmlu_typo"):
        preflight(small_config(tmp_path, "eval.tasks=ftflow_mc,mmlu_typo"))


def test_hub_task_offline_names_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mmlu's data lives on the Hub: offline (the test session sets HF_HUB_OFFLINE) and not cached, the
    check names the task and the dataset before any model is loaded."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    with pytest.raises(ServiceUnavailableError, match=r"task 'mmlu_anatomy' .*cais/mmlu"):
        benchmarks.check_tasks(["mmlu_anatomy"])
    benchmarks.check_tasks(["ftflow_mc", "ftflow_mc_zh"])  # local files: fine offline
