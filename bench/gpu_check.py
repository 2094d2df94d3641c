"""The GPU paths of the training speed switches, checked and measured on a CUDA machine in one short
run (a lent device has minutes, not hours). Runs W1 (bench/w1.py) in bf16 for ftflow's defaults and
each switch, TRL's SFTTrainer as the peer that installs beside it (LLaMA-Factory 0.9.5 pins another
transformers), a larger model of the same shape family, QLoRA (bitsandbytes 4-bit), and checks that
padding-free rows (variable-length SDPA) give the padded batch's logits and loss on the GPU.

    PYTHONPATH=$PWD python bench/gpu_check.py OUT_DIR     # ~5 minutes on one H200

Writes OUT_DIR/gpu_results.json and OUT_DIR/gpu_section.md (the "Training on a GPU" section of
bench/RESULTS.md), each result as soon as it exists, so a run cut short still reports what it did.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_throughput as tt  # noqa: E402
import w1  # noqa: E402

# ~0.4B parameters: big enough that a GPU step is compute, not kernel launches
LARGE = dict(hidden_size=1536, num_hidden_layers=16, num_attention_heads=12, intermediate_size=4096)
RUNS = [  # (label, run name in train_throughput.RUNS or "ftflow", overrides, model)
    ("ftflow defaults", "ftflow defaults", [], "w1"),
    ("ftflow padding_free off (pad to x8)", "ftflow defaults", ["train.speed.padding_free=false"], "w1"),
    ("ftflow neat_packing", "ftflow defaults", ["train.speed.neat_packing=true"], "w1"),
    ("ftflow fused_loss off", "ftflow defaults", ["train.speed.fused_loss=false"], "w1"),
    ("ftflow liger", "ftflow defaults", ["train.speed.enable_liger_kernel=true"], "w1"),
    ("TRL SFTTrainer defaults", "TRL SFTTrainer defaults", None, "w1"),
    ("TRL SFTTrainer packing", "TRL SFTTrainer packing", None, "w1"),
    ("large: ftflow defaults", "ftflow defaults", [], "large"),
    ("large: ftflow padding_free off", "ftflow defaults", ["train.speed.padding_free=false"], "large"),
    ("large: ftflow QLoRA 4-bit", "ftflow defaults", ["train.quantization.bit=4"], "large"),
    ("large: TRL SFTTrainer defaults", "TRL SFTTrainer defaults", None, "large"),
]


def varlen_equals_padded(model_dir: Path) -> dict[str, Any]:
    """Max |logit| difference and loss difference, padding-free varlen row vs the padded batch, on
    the GPU in fp32 and bf16 (the CPU test asserts 1e-5 in fp32)."""
    import torch

    from ftcore.data.collator import FlatCollator, SFTCollator
    from ftcore.data.processor import IGNORE_INDEX
    from ftcore.modeling import load_model
    from ftcore.train import varlen

    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (7, 190, 64, 301, 33):
        ids = torch.randint(3, w1.VOCAB, (n,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n // 3) + ids[n // 3 :]})
    out: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        kwargs = {"attn_implementation": "sdpa"}
        model = load_model(model_dir, dtype=dtype, device="cuda", model_kwargs=kwargs)
        padded = {k: v.cuda() for k, v in SFTCollator(pad_token_id=0, pad_to_multiple_of=8)(examples).items()}
        flat = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in FlatCollator()(examples).items()}
        with torch.no_grad():
            ref = model(**padded)
            model.set_attn_implementation(varlen.register())
            got = model(**flat, use_cache=False)
        starts = flat["cu_seq_lens_q"].tolist()
        diff = max(
            (got.logits[0, s:e].float() - ref.logits[i, : e - s].float()).abs().max().item()
            for i, (s, e) in enumerate(itertools.pairwise(starts))
        )
        out[dtype] = {"max_logit_diff": diff, "loss_diff": abs(got.loss.item() - ref.loss.item())}
        del model
        torch.cuda.empty_cache()
    return out


def main() -> None:
    import torch

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": [],
    }
    save = lambda: (out / "gpu_results.json").write_text(json.dumps(results, indent=1))  # noqa: E731
    work = Path(tt.tempfile.mkdtemp(prefix="gpu-check-"))  # models and checkpoints stay out of OUT_DIR
    data = w1.DATA_DIR
    models = {"w1": w1.build_model(work / "w1-model", data)}
    try:
        results["varlen_vs_padded"] = varlen_equals_padded(models["w1"])
    except Exception as e:  # reported, and the runs still go on
        results["varlen_vs_padded"] = {"error": repr(e)}
    save()
    models["large"] = w1.build_model(work / "large-model", data, LARGE)
    args = tt.argparse.Namespace(steps=40, max_samples=None)
    for label, name, overrides, which in RUNS:
        tool, spec = tt.configs(name, models[which], data, work / "runs", True, args)
        if overrides is not None:
            spec["overrides"] = overrides
        (work / "runs").mkdir(exist_ok=True)
        row = tt.run_one(name, spec, tool, work, refuse=False)
        row["name"] = label
        row.pop("losses", None)
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        save()
    (out / "gpu_section.md").write_text(section(results))
    print(section(results))


def section(results: dict[str, Any]) -> str:
    lines = [
        "## Training on a GPU (bench/gpu_check.py)",
        "",
        f"{results['device']}, torch {results['torch']}, transformers {results['transformers']}, "
        f"{results['date']}. W1 in bf16, 40 steps, batch 8; 'large' is W1's data on a "
        f"{LARGE['hidden_size']}-hidden, {LARGE['num_hidden_layers']}-layer Qwen2 (~0.4B). One run each.",
        "",
        "| run | tok/s | peak GPU GB | final loss | tokens |",
        "|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} | | | |")
            continue
        gpu = f"{r['peak_gpu_gb']:.2f}" if r.get("peak_gpu_gb") is not None else "-"
        loss = f"{r['final_loss']:.4f}" if r.get("final_loss") is not None else "-"
        lines.append(f"| {r['name']} | {r['tokens_per_s']:.0f} | {gpu} | {loss} | {r['tokens']} |")
    check = results.get("varlen_vs_padded")
    lines += ["", f"Padding-free varlen rows vs the padded batch on the GPU: {check}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
