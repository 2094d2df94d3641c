"""Export: LoRA merge now; quantized export and model cards follow."""

from ftcore.export.merge import merge_lora

__all__ = ["merge_lora"]
