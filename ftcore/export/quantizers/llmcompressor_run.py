"""Standalone: quantize a Hugging Face folder with llm-compressor into compressed-tensors.

Runs in the `llmcompressor` side virtualenv (it pins its own transformers); imports nothing from
ftflow. Usage: python llmcompressor_run.py ARGS.json, where ARGS.json holds model_dir, out_dir, scheme
(W4A16 | W8A8 | W8A16), group_size (W4A16), calibration (JSONL of {"text": ...}), nsamples, maxlen,
trust_remote_code. W4A16 and W8A16 run GPTQ; W8A8 smooths activations first (SmoothQuant) then GPTQ.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(args_path: str) -> None:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    args = json.loads(Path(args_path).read_text(encoding="utf-8"))
    os.chdir(Path(args_path).resolve().parent)  # the library's own log files land beside ours
    trust = bool(args.get("trust_remote_code"))
    tokenizer = AutoTokenizer.from_pretrained(args["model_dir"], trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(args["model_dir"], dtype="auto", trust_remote_code=trust)
    with open(args["calibration"], encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()][: args["nsamples"]]
    encoded = tokenizer(texts, truncation=True, max_length=args["maxlen"], add_special_tokens=False)
    dataset = Dataset.from_dict({name: encoded[name] for name in ("input_ids", "attention_mask")})
    scheme = args["scheme"]
    if scheme == "W4A16":  # the preset's group size is 128: the configured one is spelled out
        weights = {
            "num_bits": 4,
            "type": "int",
            "symmetric": True,
            "strategy": "group",
            "group_size": args["group_size"],
        }
        recipe = [
            GPTQModifier(
                ignore=["lm_head"], config_groups={"group_0": {"targets": ["Linear"], "weights": weights}}
            )
        ]
    else:
        recipe = []
        if scheme == "W8A8":
            from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

            recipe.append(SmoothQuantModifier(smoothing_strength=0.8))
        recipe.append(GPTQModifier(targets="Linear", scheme=scheme, ignore=["lm_head"]))
    oneshot(
        model=model,
        dataset=dataset,
        recipe=recipe,
        max_seq_length=args["maxlen"],
        num_calibration_samples=len(texts),
    )
    model.save_pretrained(args["out_dir"], save_compressed=True)
    tokenizer.save_pretrained(args["out_dir"])
    print(f"llmcompressor: {scheme} written to {args['out_dir']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
