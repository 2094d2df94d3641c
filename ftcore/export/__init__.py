"""Export: LoRA merge (shards, dtype, model card, Ollama Modelfile), quantized export, Hub push."""

from ftcore.export.merge import merge_lora

__all__ = ["merge_lora"]
