"""Standalone: quantize a Hugging Face folder to GPTQ (4 or 8 bit) with gptqmodel.

Runs in the `gptqmodel` side virtualenv; imports nothing from ftflow. Usage: python gptqmodel_run.py
ARGS.json, where ARGS.json holds model_dir, out_dir, bit, group_size, calibration (JSONL of
{"text": ...}), nsamples, maxlen, trust_remote_code. The output is a GPTQ folder (quantize_config in
config.json) that vLLM serves and gptqmodel (or transformers with optimum) reloads.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(args_path: str) -> None:
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    args = json.loads(Path(args_path).read_text(encoding="utf-8"))
    os.chdir(Path(args_path).resolve().parent)  # the library's own log files land beside ours
    trust = bool(args.get("trust_remote_code"))
    tokenizer = AutoTokenizer.from_pretrained(args["model_dir"], trust_remote_code=trust)
    with open(args["calibration"], encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()][: args["nsamples"]]
    calibration = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=args["maxlen"], add_special_tokens=False)
        calibration.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    config = QuantizeConfig(bits=args["bit"], group_size=args["group_size"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = GPTQModel.load(args["model_dir"], config, device=device, trust_remote_code=trust)
    model.quantize(calibration, batch_size=1)
    model.save(args["out_dir"])
    tokenizer.save_pretrained(args["out_dir"])
    print(f"gptqmodel: {args['bit']}-bit GPTQ written to {args['out_dir']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
