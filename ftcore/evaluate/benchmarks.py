"""Benchmarks through EleutherAI's lm-evaluation-harness (`eval.tasks`), not a harness of our own.

The model is the one the evaluate step already loaded (base, or tuned with its PEFT adapter), wrapped
in lm-eval's HFLM; or, when `eval.endpoint` is set, an OpenAI-compatible server reached through
lm-eval's `local-completions` model (loglikelihood needs /v1/completions with echo + logprobs, which
`ft serve` offers). ftflow's own tasks (ftcore/evaluate/tasks: ftflow_mc, ftflow_mc_zh) read files
shipped with the package, so they run offline; hub tasks (mmlu, cmmlu, ceval-valid, ...) need the
Hugging Face Hub or a datasets cache, which `check_tasks` verifies before any model is loaded.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from ftcore.errors import ConfigError, ServiceUnavailableError

log = logging.getLogger("ftcore.evaluate")

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
API_KEY_ENV = "FTFLOW_API_KEY"
# what of lm-eval's result is kept in the eval artifact: no dates, timings or machine info, so the
# same scores give the same artifact fingerprint
KEPT = (
    "results",
    "groups",
    "group_subtasks",
    "configs",
    "versions",
    "n-shot",
    "higher_is_better",
    "n-samples",
)


def own_tasks() -> set[str]:
    """The task names shipped with ftflow (one YAML per task under TASKS_DIR)."""
    import yaml

    names = set()
    for path in TASKS_DIR.rglob("*.yaml"):
        lines = path.read_text(encoding="utf-8").splitlines()
        text = "\n".join(line for line in lines if "!function" not in line)  # a tag safe_load refuses
        task = (yaml.safe_load(text) or {}).get("task")
        if isinstance(task, str):
            names.add(task)
    return names


@functools.lru_cache(maxsize=2)
def _manager(with_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=with_defaults)


def task_manager(names: list[str]) -> Any:
    """lm-eval's TaskManager with ftflow's tasks; lm-eval's own ~15k task files are indexed (tens of
    seconds on a busy CPU) only when a name is not one of ours."""
    return _manager(not set(names) <= own_tasks())


def check_tasks(names: list[str]) -> None:
    """Unknown names are a ConfigError naming eval.tasks; a task whose data lives on the Hugging Face
    Hub, unreachable and not in the local caches, is a ServiceUnavailableError naming the task."""
    if not names:
        return
    manager = task_manager(names)
    unknown = [name for name in names if name not in manager.task_index]
    if unknown:
        mine = ", ".join(sorted(own_tasks()))
        raise ConfigError(
            f"eval.tasks: unknown lm-eval task(s) {', '.join(unknown)}; ftflow ships {mine}; "
            "lm-eval's own (mmlu, cmmlu, ceval-valid, ...): `python -m lm_eval ls tasks`"
        )
    for name in names:
        for leaf, dataset in _hub_datasets(manager, name):
            if not _dataset_cached(dataset) and not _hub_answers(dataset):
                raise ServiceUnavailableError(
                    f"eval.tasks: task '{name}' ({leaf}) reads dataset '{dataset}' from the Hugging Face "
                    "Hub, which does not answer, and the dataset is not in the HF_DATASETS_CACHE / "
                    "HF_HUB_CACHE caches; run once online to cache it, or use a local task such as ftflow_mc"
                )


def _hub_datasets(manager: Any, name: str, seen: set[str] | None = None) -> list[tuple[str, str]]:
    """(leaf task, hub dataset id) for a task, group or tag; tasks over local files are left out."""
    seen = set() if seen is None else seen
    if name in seen or name not in manager.task_index:
        return []
    seen.add(name)
    entry = manager.task_index[name]
    cfg = entry.cfg or {}
    kind = getattr(entry.kind, "name", str(entry.kind))
    if kind == "GROUP":
        children = [c if isinstance(c, str) else c.get("task") for c in cfg.get("task", [])]
    elif kind == "TAG":  # every task carrying the tag
        children = [n for n, e in manager.task_index.items() if name in (getattr(e, "tags", None) or ())]
    else:
        path = cfg.get("dataset_path")
        local = not isinstance(path, str) or "/" not in path or Path(path).exists()
        return [] if local or cfg.get("custom_dataset") else [(name, path)]
    found: list[tuple[str, str]] = []
    for child in children:
        if isinstance(child, str):
            found += _hub_datasets(manager, child, seen)
    return found


def _dataset_cached(dataset: str) -> bool:
    from huggingface_hub import constants

    datasets_cache = Path(
        os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets"
    ).expanduser()
    hub_cache = Path(constants.HF_HUB_CACHE).expanduser()
    return (datasets_cache / dataset.replace("/", "___")).is_dir() or (
        hub_cache / ("datasets--" + dataset.replace("/", "--"))
    ).is_dir()


@functools.lru_cache(maxsize=64)
def _hub_answers(dataset: str) -> bool:
    """One quick request (5 s at most): does the Hub answer for this dataset?"""
    import httpx
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        reply = httpx.head(f"{constants.ENDPOINT}/api/datasets/{dataset}", timeout=5.0, follow_redirects=True)
    except httpx.HTTPError:
        return False
    return reply.status_code < 500


def in_process_lm(model: Any, tokenizer: Any, batch_size: int) -> Any:
    """lm-eval's HFLM over a model already in memory (a PeftModel keeps its adapter active)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def endpoint_lm(url: str, model: str | None, tokenizer_path: str | Path, batch_size: int) -> Any:
    """lm-eval's `local-completions` model against an OpenAI-compatible server. The key comes from
    FTFLOW_API_KEY and travels only in the request header (never in lm-eval's logged model_args)."""
    import httpx
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    base = url.rstrip("/")
    completions = base if base.endswith("/completions") else base + ("" if base.endswith("/v1") else "/v1")
    completions = completions if completions.endswith("/completions") else completions + "/completions"
    key = os.environ.get(API_KEY_ENV, "")
    header = {"Authorization": f"Bearer {key}"} if key else {}
    if model is None:  # the server's first model: its base (ft serve and vLLM list it first)
        root = completions.removesuffix("/completions")
        try:
            reply = httpx.get(f"{root}/models", headers=header, timeout=10.0)
            reply.raise_for_status()
            model = reply.json()["data"][0]["id"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
            raise ServiceUnavailableError(
                f"eval.endpoint: {root}/models does not list a model ({type(exc).__name__}: {exc}); "
                f"is the server up, and is {API_KEY_ENV} its key?"
            ) from exc
    return LocalCompletionsAPI(
        base_url=completions,
        model=model,
        tokenizer=str(tokenizer_path),
        tokenizer_backend="huggingface",
        batch_size=batch_size,
        header=header,
        max_retries=1,
    )


def run(lm: Any, names: list[str], num_fewshot: int | None, limit: int | None) -> dict[str, Any]:
    """lm-eval's simple_evaluate on `names`: {"metrics": {task_metric: value}, "results": JSON}."""
    from lm_eval import simple_evaluate

    # lm-eval warns about what ftflow does on purpose (a model object, custom task loaders)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:
        raw = simple_evaluate(
            model=lm,
            tasks=list(names),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=task_manager(names),
            log_samples=False,
            bootstrap_iters=0,  # no stderr resampling: minutes on CPU, and not a score
        )
    except (ConnectionError, OSError) as exc:
        raise ServiceUnavailableError(f"eval.tasks {', '.join(names)}: {type(exc).__name__}: {exc}") from exc
    kept = {key: raw[key] for key in KEPT if key in raw}
    return {"metrics": flat_metrics(kept), "results": kept}


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """{'<task>_<metric>': value} ('acc,none' -> 'acc'; another filter is a suffix); no stderr."""
    flat: dict[str, float] = {}
    for part in ("results", "groups"):
        for task, values in (results.get(part) or {}).items():
            for key, value in values.items():
                metric, _, filt = key.partition(",")
                if not filt or "_stderr" in metric or isinstance(value, bool):
                    continue
                if not isinstance(value, (int, float)):
                    continue
                name = f"{task}_{metric}" if filt == "none" else f"{task}_{metric}_{filt}"
                flat[name.replace(" ", "_")] = float(value)
    return flat


def in_process(who: str, model: Any, tokenizer: Any, cfg: Any) -> dict[str, Any]:
    """The evaluate step's benchmarks for one loaded model ({} when eval.tasks is empty or the
    benchmarks run against eval.endpoint instead)."""
    ev = cfg.eval
    if not ev.tasks or ev.endpoint:
        return {}
    log.info("[evaluate] %s: benchmarks %s (lm-eval, in process)", who, ", ".join(ev.tasks))
    lm = in_process_lm(model, tokenizer, ev.benchmark_batch_size)
    return run(lm, ev.tasks, ev.num_fewshot, ev.benchmark_limit)


def served(cfg: Any, tuned: list[str], base: str | Path) -> dict[str, Any] | None:
    """The benchmarks against eval.endpoint (None when not asked), scored as `served/...`. lm-eval
    tokenizes locally: the tuned folder's tokenizer when it has one (an adapter may not), else the base's."""
    ev = cfg.eval
    if not ev.tasks or not ev.endpoint:
        return None
    tokenizer_path = next((p for p in tuned if (Path(p) / "tokenizer_config.json").is_file()), base)
    log.info("[evaluate] served: benchmarks %s against %s", ", ".join(ev.tasks), ev.endpoint)
    lm = endpoint_lm(ev.endpoint, ev.endpoint_model, tokenizer_path, ev.benchmark_batch_size)
    return run(lm, ev.tasks, ev.num_fewshot, ev.benchmark_limit)


def write_results(folder: Path, scored: dict[str, Any]) -> None:
    """benchmarks.json in the eval artifact: lm-eval's per-task results for each model scored."""
    import json

    kept = {who: res.get("benchmarks") or res.get("results") for who, res in scored.items() if res}
    kept = {who: value for who, value in kept.items() if value}
    if kept:
        text = json.dumps(kept, indent=1, sort_keys=True, default=_jsonable, ensure_ascii=False)
        (Path(folder) / "benchmarks.json").write_text(text, encoding="utf-8")


def _jsonable(value: Any) -> str:
    """Functions in lm-eval's task configs by name (a repr holds a memory address: unstable)."""
    name = getattr(value, "__qualname__", None)
    return f"{getattr(value, '__module__', '')}.{name}" if name else type(value).__name__
