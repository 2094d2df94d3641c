"""Standalone (runs in a quantizer's side env, imports nothing from ftflow): reload a quantized folder,
score prompts and generate, so tests can compare with the unquantized model in ftflow's env.

Usage: python quantized_logits.py ARGS.json, ARGS.json = {"model_dir", "loader": "transformers" |
"gptqmodel", "prompts": [[token ids], ...], "max_new_tokens", "out"}; writes {"logits": [last-token
logits per prompt], "generated": [new token ids per prompt]} to "out".
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(args_path: str) -> None:
    import torch

    args = json.loads(Path(args_path).read_text(encoding="utf-8"))
    os.chdir(Path(args_path).resolve().parent)  # the library's own log files land beside ours
    if args["loader"] == "gptqmodel":
        from gptqmodel import GPTQModel

        model = GPTQModel.load(args["model_dir"], device="cpu")
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args["model_dir"], dtype="auto", device_map="cpu")
    logits, generated = [], []
    with torch.no_grad():
        for prompt in args["prompts"]:
            ids = torch.tensor([prompt])
            mask = torch.ones_like(ids)
            logits.append(model(input_ids=ids, attention_mask=mask).logits[0, -1].float().tolist())
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=args["max_new_tokens"], do_sample=False
            )
            generated.append(out[0, ids.shape[1] :].tolist())
    with open(args["out"], "w", encoding="utf-8") as handle:
        json.dump({"logits": logits, "generated": generated}, handle)


if __name__ == "__main__":
    main(sys.argv[1])
