"""bitsandbytes 4-bit (nf4, double quantization) export, in ftflow's own environment.

The saved folder carries its `quantization_config` in config.json, so transformers and vLLM
(`--quantization bitsandbytes`) load it as is; the weights are quantized as they load, no calibration.
"""

from __future__ import annotations

from pathlib import Path


def quantize_nf4(model_dir: Path, out_dir: Path, trust_remote_code: bool = False) -> None:
    """Load `model_dir` quantized to nf4 and save it (safetensors) into `out_dir`."""
    import torch
    from transformers import BitsAndBytesConfig

    from ftcore.modeling import load_model, saved_dtype

    dtype = saved_dtype(model_dir) or torch.float32
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,  # matmuls run in the merged model's own precision
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(
        model_dir,
        trust_remote_code,
        dtype=str(dtype).removeprefix("torch."),
        quantization_config=config,
        device_map=device,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
