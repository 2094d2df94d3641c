"""Training: one module per stage, methods chosen from a table, callbacks for progress and tracking.

The train step (ftcore.stages.train) runs it in a worker process: launch -> worker -> job.
"""

from ftcore.train.methods import METHODS
from ftcore.train.sft import run_sft

# stage name -> entry function(model, tokenizer, train_dataset, cfg, checkpoint_dir, resume_from, callbacks,
#                              method); it trains the prepared model and returns metrics + log history
STAGES = {"sft": run_sft}

__all__ = ["METHODS", "STAGES"]
