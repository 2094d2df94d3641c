"""PPO for language models, implemented here (TRL 1.x removed its PPOTrainer): rollout (generation,
reward model, log-probabilities, values), losses (GAE, clipped objectives, adaptive KL) and the loop."""

from ftcore.train.ppo.trainer import run_ppo

__all__ = ["run_ppo"]
