"""Serving throughput: vLLM vs ftflow's transformers backend, same model, same load.

Each backend is started with ftcore.serve.start_server (what `ft serve` runs), warmed up, then C
concurrent clients (default 1, 8, 32) each send R streamed /v1/completions requests of
--max-tokens tokens. Per load: generated tokens/s (the servers' own usage counts), p50/p95 request
latency, p50/p95 time to first token; the ratio vLLM / transformers is what to compare. CPU idle share
during the run (from /proc/stat) is recorded: other processes on the machine skew absolute numbers.

    PYTHONPATH=$PWD python bench/serve_throughput.py --model builtin:tiny-llama --requests 4 \
        --out bench/serve_throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "Once upon a time in a small village",
    "The three most important things about databases are",
    "def fibonacci(n):",
    "In the year 2050, cities will",
]


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


async def one_request(client: Any, url: str, model: str, prompt: str, max_tokens: int) -> dict[str, float]:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url + "/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c.get("text") for c in chunk.get("choices", [])):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return {"latency": end - start, "ttft": (first or end) - start, "tokens": tokens}


async def run_load(url: str, key: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(headers=headers, timeout=1800, limits=limits) as client:

        async def worker(i: int) -> list[dict[str, float]]:
            return [
                await one_request(client, url, model, PROMPTS[(i + j) % len(PROMPTS)], max_tokens)
                for j in range(requests)
            ]

        idle0, total0 = cpu_times()
        start = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(i) for i in range(clients))) for r in rs]
        wall = time.perf_counter() - start
        idle1, total1 = cpu_times()
    latencies = sorted(r["latency"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 4),
        "p95_latency_s": round(_pct(latencies, 0.95), 4),
        "p50_ttft_s": round(statistics.median(ttfts), 4),
        "p95_ttft_s": round(_pct(ttfts, 0.95), 4),
        "cpu_idle_share": round((idle1 - idle0) / max(total1 - total0, 1), 3),
    }


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def bench_backend(model: Path, backend: str, args: argparse.Namespace, logs: Path) -> dict:
    from ftcore.serve import start_server

    key = "bench-key"
    extra = ["--enforce-eager"] if backend == "vllm" and args.enforce_eager else []
    started = time.perf_counter()
    with start_server(
        model,
        logs / backend,
        backend=backend,
        api_key=key,
        max_model_len=args.max_model_len,
        extra_args=extra,
    ) as server:
        ready_s = time.perf_counter() - started
        name = server.models[0]
        asyncio.run(run_load(server.url, key, name, 2, 1, args.max_tokens))  # warm-up
        loads = [
            asyncio.run(run_load(server.url, key, name, c, args.requests, args.max_tokens))
            for c in args.concurrency
        ]
        for load in loads:
            print(backend, json.dumps(load), flush=True)
    return {"backend": backend, "ready_s": round(ready_s, 1), "loads": loads}


def markdown(result: dict) -> str:
    """The RESULTS.md table: vLLM / transformers ratios per load, with the absolute numbers."""
    by = {b["backend"]: {ld["clients"]: ld for ld in b["loads"]} for b in result["backends"]}
    lines = [
        "| clients | tok/s vLLM | tok/s transformers | tok/s ratio | p50 latency ratio | p95 latency ratio "
        "| p50 TTFT ratio | CPU idle (vLLM / tf) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted(by.get("vllm", {})):
        v, t = by["vllm"][c], by["transformers"][c]

        def ratio(key: str, v: dict = v, t: dict = t) -> str:
            return f"{v[key] / t[key]:.2f}"

        cells = [
            str(c),
            str(v["tokens_per_s"]),
            str(t["tokens_per_s"]),
            ratio("tokens_per_s"),
            ratio("p50_latency_s"),
            ratio("p95_latency_s"),
            ratio("p50_ttft_s"),
            f"{v['cpu_idle_share']:.0%} / {t['cpu_idle_share']:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny-llama", help="model folder or builtin:NAME")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=4, help="requests per client per load")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--backends", default="vllm,transformers")
    parser.add_argument("--no-enforce-eager", dest="enforce_eager", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("bench/serve_throughput.json"))
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    model = Path(args.model)
    if args.model.startswith("builtin:"):
        from ftcore.builtin import ensure_builtin

        model = ensure_builtin(args.model.removeprefix("builtin:"))
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        backends = [bench_backend(model, b, args, Path(tmp)) for b in args.backends.split(",")]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {_cpu_model()}, {_cpu_count()} cores",
        "model": args.model,
        "max_tokens": args.max_tokens,
        "requests_per_client": args.requests,
        "backends": backends,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if {"vllm", "transformers"} <= {b["backend"] for b in backends}:
        print(markdown(result))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
