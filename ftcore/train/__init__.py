"""Training: one module per objective (the YAML's `train.stage`: sft, pt, rm, dpo, kto, orpo, simpo;
more later), methods chosen from a table, callbacks for progress and tracking.

The train step (ftcore.steps.train) runs it in a worker process: launch -> worker -> job.
"""

from ftcore.train.grpo import run_grpo
from ftcore.train.methods import METHODS, method_for
from ftcore.train.ppo import run_ppo
from ftcore.train.pref import run_dpo, run_kto, run_orpo, run_simpo
from ftcore.train.pt import run_pt
from ftcore.train.rm import HEADS, run_rm
from ftcore.train.sft import run_sft

# objective -> entry function(model, tokenizer, train_dataset, cfg, checkpoint_dir, resume_from, callbacks,
#                           method); it trains the prepared model and returns metrics + log history
OBJECTIVES = {
    "sft": run_sft,
    "pt": run_pt,
    "rm": run_rm,
    "dpo": run_dpo,
    "kto": run_kto,
    "orpo": run_orpo,
    "simpo": run_simpo,
    "grpo": run_grpo,
    "ppo": run_ppo,
}

__all__ = ["HEADS", "METHODS", "OBJECTIVES", "method_for"]
