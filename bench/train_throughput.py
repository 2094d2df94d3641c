"""Training throughput on workload W1 (issue 10): ftflow (defaults, and each speed switch on its own)
against LLaMA-Factory 0.9.5 (defaults, neat_packing) and TRL's SFTTrainer (defaults, packing).

W1 (bench/w1.py): a 30.9M-parameter Qwen2 built locally, alpaca_en_demo's 999 rows (a length-matched
stand-in is shipped; --alpaca FILE takes the real one), template qwen, cutoff 512, LoRA rank 8 alpha 16
on all 7 projections, batch 8, 40 steps, lr 1e-4 constant, bf16 (only where the CPU has AVX512-BF16 or
AMX: emulated bf16 is 7-50x slower than fp32) and fp32.
Each run is its own process; runs are interleaved (round 1: every run; rounds 2-3: ftflow's default
and the best peer, LLaMA-Factory neat_packing). Per run: non-padding input tokens/s over the training
loop, peak RSS, final loss (mean of the last 5 steps); medians of the repeats and the ratios against
each peer. Then the whole-process wall time of one epoch: `ft train` vs `llamafactory-cli train`.

A run during which other processes used more than a quarter of a core (/proc/stat minus the run's own
CPU time) is refused: reported as REFUSED, not counted. Writes the section "Training throughput (W1)"
of bench/RESULTS.md.

How long, measured on this 2-core machine (no bf16 instructions: fp32 only): about 95 minutes.
ftflow's runs take ~2.5 minutes each, LLaMA-Factory's defaults 6.5, its neat_packing ~11 (17 s a step,
three times), TRL's two ~10 together (capped at 12 steps, w1_drivers.TRL_MAX_STEPS), and the epochs
~22. Installing LLaMA-Factory into bench/.venvs/llamafactory (or FTFLOW_VENVS/llamafactory-bench)
takes ~5 minutes the first time. `--part throughput --steps 10 --runs "ftflow defaults,LLaMA-Factory
neat_packing"` is the headline comparison alone, ~12 minutes.

    PYTHONPATH=$PWD python bench/train_throughput.py                 # the full benchmark
    PYTHONPATH=$PWD python bench/train_throughput.py --smoke         # 3 steps, no refusal, no file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import w1  # noqa: E402

from ftcore.modeling import cpu_bf16_native  # noqa: E402

LF_VERSION = "0.9.5"
# run name -> (tool, variant): ftflow variants are dotted overrides on its defaults
RUNS: dict[str, tuple[str, Any]] = {
    "ftflow defaults": ("ftflow", []),
    "ftflow neat_packing": ("ftflow", ["train.speed.neat_packing=true"]),
    "ftflow fused_loss off": ("ftflow", ["train.speed.fused_loss=false"]),
    "ftflow padding_free off (pad to x8)": ("ftflow", ["train.speed.padding_free=false"]),
    "ftflow padding_free off + group_by_length": (
        "ftflow",
        ["train.speed.padding_free=false", "train.speed.group_by_length=true"],
    ),
    "ftflow gradient_checkpointing on": ("ftflow", ["train.speed.gradient_checkpointing=true"]),
    "ftflow torch_compile on": ("ftflow", ["train.speed.torch_compile=true"]),
    "LLaMA-Factory defaults": ("llamafactory", {}),
    "LLaMA-Factory neat_packing": ("llamafactory", {"neat_packing": True}),
    "TRL SFTTrainer defaults": ("trl", False),
    "TRL SFTTrainer packing": ("trl", True),
}
REPEATED = ("ftflow defaults", "LLaMA-Factory neat_packing")
REFUSE_CORES = 0.25  # a run during which other processes used more cores than this is not counted


def cpu_busy() -> int:
    """Busy jiffies of all CPUs since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def lf_python() -> Path:
    """LLaMA-Factory's interpreter, installed on first use (torch pinned first; torchvision and
    torchaudio removed: they do not load beside the CPU torch)."""
    root = (
        Path(os.environ["FTFLOW_VENVS"]) / "llamafactory-bench"
        if "FTFLOW_VENVS" in os.environ
        else HERE / ".venvs" / "llamafactory"
    )
    python = root / "bin" / "python"
    if not python.exists():
        import torch

        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True)
        subprocess.run([*pip, f"llamafactory=={LF_VERSION}"], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio"], check=False
        )
    stub = root / "stubs" / "torchaudio"  # LLaMA-Factory imports torchaudio at start (audio inputs only)
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").touch()
    return python


def repo_path() -> str:
    """PYTHONPATH for ftflow's runs: this checkout first, then what the caller had (carried wheels)."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def lf_env(python: Path) -> dict[str, str]:
    return {**os.environ, "DISABLE_VERSION_CHECK": "1", "PYTHONPATH": str(python.parents[1] / "stubs")}


def configs(
    name: str, model: Path, data: Path, work: Path, bf16: bool, a: argparse.Namespace
) -> tuple[str, dict]:
    """(tool, spec) of one run: the same W1 settings in each tool's own keys."""
    tool, variant = RUNS[name]
    common = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_target": "all",
        "dataset": w1.DATASET,
        "dataset_dir": str(data),
        "template": "qwen",
        "cutoff_len": 512,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "bf16": bf16,
        **({"max_steps": a.steps} if a.steps else {"num_train_epochs": 1}),
        **({"max_samples": a.max_samples} if a.max_samples else {}),
    }
    if tool == "ftflow":
        config = {
            **common,
            "name": "w1",
            "workdir": str(work / "ftflow"),
            "save_steps": 100000,
            "report_to": "none",
        }
        return tool, {"config": config, "overrides": variant}
    if tool == "llamafactory":
        config = {
            **common,
            "do_train": True,
            "output_dir": str(work / "lf-out"),
            "overwrite_output_dir": True,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "warmup_ratio": 0.0,
            **variant,
        }
        return tool, {"config": config}
    spec = {
        "model": str(model),
        "data_file": str(data / f"{w1.DATASET}.json"),
        "output_dir": str(work / "trl-out"),
        "batch": 8,
        "max_steps": a.steps or -1,
        "lr": 1e-4,
        "bf16": bf16,
        "cutoff": 512,
        "packing": variant,
        "max_samples": a.max_samples,
    }
    return tool, {"config": spec}


def run_one(
    name: str, spec: dict, tool: str, work: Path, refuse: bool, threads: int | None = None
) -> dict[str, Any]:
    """One run in a child process: its Meter result, peak RSS and the load of the other processes."""
    spec_file, result_file = work / "spec.json", work / "result.json"
    spec_file.write_text(json.dumps(spec))
    result_file.unlink(missing_ok=True)
    if tool == "llamafactory":
        python = lf_python()
        env = lf_env(python)
    else:
        python, env = Path(sys.executable), {**os.environ, "PYTHONPATH": repo_path()}
    env = {**env, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    if threads:  # on a busy machine torch's threads thrash (10-40x slower): one each keeps it sane
        env["OMP_NUM_THREADS"] = str(threads)
    log = (work / f"{name.replace(' ', '_')}.log").open("w")
    cmd = [str(python), str(HERE / "w1_drivers.py"), tool, str(spec_file), str(result_file)]
    status, _, usage, others = measured(cmd, env, log)
    row: dict[str, Any] = {"name": name, "others_cores": others, "peak_rss_gb": usage.ru_maxrss / 1e6}
    if status != 0 or not result_file.exists():
        row["error"] = f"exit status {status}; see {log.name}"
    else:
        row.update(json.loads(result_file.read_text()))
        if not row["tokens"]:
            row["error"] = f"no tokens counted; see {log.name}"
    row["refused"] = refuse and others > REFUSE_CORES
    return row


def measured(cmd: list[str], env: dict[str, str], log: Any) -> tuple[int, float, Any, float]:
    """Run `cmd` to its end: its exit status, seconds, resource usage, and the cores other processes
    used meanwhile (/proc/stat's busy time minus the command's own)."""
    busy0, start = cpu_busy(), time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    own = (usage.ru_utime + usage.ru_stime) * os.sysconf("SC_CLK_TCK")
    others = max(0.0, (cpu_busy() - busy0 - own) / os.sysconf("SC_CLK_TCK") / seconds)
    return status, seconds, usage, others


def wall_time(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds of one whole command, and the cores other processes used meanwhile."""
    status, seconds, _, others = measured(cmd, env, subprocess.DEVNULL)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {status}")
    return seconds, others


# (label, tool, LLaMA-Factory-style keys over W1's) of the one-epoch wall-time runs: ftflow's defaults
# against LLaMA-Factory's best setting (its defaults train at a third of the speed: an epoch of them
# would add ~20 minutes here and say less)
EPOCH_RUNS = (
    ("ft train (defaults)", "ftflow", {}),
    ("llamafactory-cli train (neat_packing)", "llamafactory", {"neat_packing": True}),
)


def epoch_wall_times(
    model: Path, data: Path, work: Path, a: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    """Whole-process seconds of one epoch (start-up, tokenization, training and saving): `ft train`
    with its defaults vs `llamafactory-cli train` with its best setting."""
    import yaml

    ep = argparse.Namespace(**{**vars(a), "steps": None})
    out: dict[str, tuple[float, float]] = {}
    ft_env = {**os.environ, "PYTHONPATH": repo_path(), "OMP_WAIT_POLICY": "PASSIVE"}
    python = lf_python()
    for label, tool, extra in EPOCH_RUNS:
        name = "ftflow defaults" if tool == "ftflow" else "LLaMA-Factory defaults"
        folder = work / f"epoch-{len(out)}"
        _, spec = configs(name, model, data, folder, a.bf16_wall, ep)
        path = folder.with_suffix(".yaml")
        path.write_text(yaml.safe_dump({**spec["config"], **extra}))
        if tool == "ftflow":
            out[label] = wall_time([sys.executable, "-m", "flows.cli", "train", str(path)], ft_env)
        else:
            cli = str(python.parent / "llamafactory-cli")
            env = {**lf_env(python), "OMP_WAIT_POLICY": "PASSIVE"}
            out[label] = wall_time([cli, "train", str(path)], env)
        print(f"[epoch] {label}: {out[label][0]:.0f} s, others {out[label][1]:.2f} cores", flush=True)
    return out


def median_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run name: the medians of its counted repeats (refused or failed runs left out)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    out = {}
    for name, runs in by_name.items():
        ok = [r for r in runs if not r.get("refused") and "error" not in r]
        if not ok:
            first = runs[0]
            out[name] = {
                "status": first.get("error") or f"REFUSED (others used {first['others_cores']:.2f} cores)"
            }
            continue
        med = {k: statistics.median(r[k] for r in ok) for k in ("tokens_per_s", "peak_rss_gb", "seconds")}
        losses = [r["final_loss"] for r in ok if r["final_loss"] is not None]
        med["final_loss"] = statistics.median(losses) if losses else None
        med["n"], med["tokens"] = len(ok), ok[0]["tokens"]
        med["others_cores"] = max(r["others_cores"] for r in ok)
        out[name] = med
    return out


def machine_line(a: argparse.Namespace) -> str:
    return (
        f"`bench/train_throughput.py` on {platform.node()} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"CPU bf16 instructions: {'yes' if cpu_bf16_native() else 'no (bf16 emulated: fp32 only)'}; "
        f"refusal {'on' if a.refuse else 'OFF (numbers taken under load)'}."
    )


def epoch_report(walls: dict[str, tuple[float, float]], a: argparse.Namespace) -> str:
    """The RESULTS.md section of the one-epoch wall times, with ratios against ft train."""
    ours = walls.get("ft train (defaults)", (0.0, 0.0))[0]
    lines = [
        "## One epoch of W1, whole process",
        "",
        machine_line(a) + f" dtype {'bf16' if a.bf16_wall else 'fp32'}; all 999 rows, batch 8.",
        "",
        "| command | wall s | its time / ft train's | others' cores |",
        "|---|---|---|---|",
    ]
    for label, (seconds, others) in walls.items():
        flag = " REFUSED" if a.refuse and others > REFUSE_CORES else ""
        ratio = f"{seconds / ours:.2f}x" if ours else "-"
        lines.append(f"| {label}{flag} | {seconds:.0f} | {ratio} | {others:.2f} |")
    return "\n".join([*lines, ""])


def report(results: dict[str, dict], a: argparse.Namespace) -> str:
    """The RESULTS.md section: one table per dtype, ratios against each peer."""
    lines = [
        "## Training throughput (W1)",
        "",
        machine_line(a) + f" Steps {a.steps}, rows {a.max_samples or 'all'}. "
        "tok/s: non-padding input tokens per second of the training loop; "
        "loss: mean of the last 5 steps; n: counted repeats (median shown).",
        "",
    ]
    peers = [n for n in RUNS if not n.startswith("ftflow")]
    for dtype, res in results.items():
        lines += [
            f"### {dtype}",
            "",
            "| run | tok/s | peak RSS GB | final loss | tokens | n | others' cores |",
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        for name, r in res.items():
            if "status" in r:
                lines.append(f"| {name} | {r['status']} | | | | | |")
                continue
            loss = f"{r['final_loss']:.4f}" if r["final_loss"] is not None else "-"
            lines.append(
                f"| {name} | {r['tokens_per_s']:.0f} | {r['peak_rss_gb']:.2f} | {loss} | {r['tokens']} "
                f"| {r['n']} | {r['others_cores']:.2f} |"
            )
        lines += ["", "Ratios (tok/s ftflow / peer; peak RSS ftflow / peer):", ""]
        for ours in (n for n in res if n.startswith("ftflow") and "tokens_per_s" in res[n]):
            parts = [
                f"{p}: {res[ours]['tokens_per_s'] / res[p]['tokens_per_s']:.2f}x, RSS "
                f"{res[ours]['peak_rss_gb'] / res[p]['peak_rss_gb']:.2f}x"
                for p in peers
                if "tokens_per_s" in res.get(p, {})
            ]
            lines.append(f"- {ours} vs " + "; ".join(parts))
        lines.append("")
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the section under its header, keeping the rest of RESULTS.md."""
    header = section.splitlines()[0] + "\n"  # the whole line: one header may start another
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if header in text:
        before, _, rest = text.partition(header)
        nxt = rest.find("\n## ")
        text = before + section + (rest[nxt:] if nxt >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def throughput(
    names: list[str], model: Path, data: Path, work: Path, a: argparse.Namespace
) -> dict[str, dict]:
    """Per dtype, the medians of the interleaved runs (round 1: every run; then the repeated ones)."""
    results: dict[str, dict] = {}
    for dtype in a.dtypes.split(","):
        rows = []
        schedule = [names] + [[n for n in names if n in REPEATED]] * (a.repeats - 1)
        for round_names in schedule:
            for name in round_names:
                tool, spec = configs(name, model, data, work / "runs", dtype == "bf16", a)
                (work / "runs").mkdir(parents=True, exist_ok=True)
                row = run_one(name, spec, tool, work, a.refuse, a.threads)
                rows.append(row)
                print(f"[{dtype}] {json.dumps({k: v for k, v in row.items() if k != 'losses'})}", flush=True)
        results[dtype] = median_rows(rows)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="training steps per run (W1: 40)")
    p.add_argument("--max-samples", type=int, default=None, help="rows of the dataset (W1: all 999)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of ftflow defaults and the best peer")
    p.add_argument(
        "--dtypes",
        default=None,
        help="comma list of bf16, fp32 (default: both where the CPU does bf16 in hardware, else fp32: "
        "emulated bf16 is 7-50x slower than fp32 and measures nothing W1 means)",
    )
    p.add_argument("--runs", default=",".join(RUNS), help="comma list of run names (default: all)")
    p.add_argument("--no-refuse", dest="refuse", action="store_false", help="count runs under load too")
    p.add_argument(
        "--part",
        choices=("all", "throughput", "epoch"),
        default="all",
        help="the tokens/s runs, the one-epoch wall times, or both (each writes its own section)",
    )
    p.add_argument(
        "--alpaca", type=Path, default=None, help="a real alpaca_en_demo.json instead of the stand-in"
    )
    p.add_argument(
        "--smoke", action="store_true", help="3 steps (or --steps), 64 rows, 1 repeat, one dtype, no refusal"
    )
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each run (default: torch's)")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    a = p.parse_args()
    a.dtypes = a.dtypes or ("bf16,fp32" if cpu_bf16_native() else "fp32")
    if a.smoke:
        a.steps = a.steps if a.steps != 40 else 3
        a.max_samples, a.repeats, a.refuse = a.max_samples or 64, 1, False
        a.dtypes = a.dtypes.split(",")[0]
        a.threads = a.threads or 1
    a.bf16_wall = "bf16" in a.dtypes
    names = [n.strip() for n in a.runs.split(",") if n.strip()]
    work = Path(tempfile.mkdtemp(prefix="w1-bench-"))
    data = w1.data_dir(a.alpaca, work)
    model = w1.build_model(HERE / ".w1-model" if a.alpaca is None else work / "w1-model", data)
    if a.part in ("all", "throughput"):
        section = report(throughput(names, model, data, work, a), a)
        print(section)
        if not a.smoke:
            write_section(a.out, section)
    if a.part in ("all", "epoch"):
        section = epoch_report(epoch_wall_times(model, data, work, a), a)
        print(section)
        if not a.smoke:
            write_section(a.out, section)


if __name__ == "__main__":
    main()
