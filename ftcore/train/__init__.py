"""Training: one module per stage, methods chosen from a table, callbacks for progress and tracking."""

from ftcore.train.methods import METHODS
from ftcore.train.sft import run_sft

# stage name -> entry function(model, tokenizer, train_dataset, cfg, checkpoint_dir, resume_from, callbacks)
STAGES = {"sft": run_sft}

__all__ = ["METHODS", "STAGES"]
