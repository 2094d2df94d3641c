"""Training: one module per objective (the YAML's `train.stage`: sft, pt; dpo, ... later),
methods chosen from a table, callbacks for progress and tracking.

The train step (ftcore.steps.train) runs it in a worker process: launch -> worker -> job.
"""

from ftcore.train.grpo import run_grpo
from ftcore.train.methods import METHODS
from ftcore.train.ppo import run_ppo
from ftcore.train.pt import run_pt
from ftcore.train.sft import run_sft

# objective -> entry function(model, tokenizer, train_dataset, cfg, checkpoint_dir, resume_from, callbacks,
#                           method); it trains the prepared model and returns metrics + log history
OBJECTIVES = {"sft": run_sft, "pt": run_pt, "grpo": run_grpo, "ppo": run_ppo}

__all__ = ["METHODS", "OBJECTIVES"]
