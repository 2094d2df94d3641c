"""Full tuning with memory-saving optimizers: GaLore and APOLLO (transformers' integrations of the
galore-torch / apollo-torch packages) and BAdam (the badam package's block optimizers; its ratio
mode is refused at config time: its sparse gradients break the Trainer's gradient norm).

The layer-wise GaLore / APOLLO variants step inside backward: single process only, no gradient
accumulation (refused at config time). BAdam here is single-process (no DeepSpeed ZeRO-3 wiring).
"""

from __future__ import annotations

from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.train.methods.base import FullMethod


def _targets(target: list[str]) -> Any:
    return "all-linear" if target == ["all"] else target


class GaloreMethod(FullMethod):
    name = "galore"
    config_sections = frozenset({"galore"})

    def optimizer_args(self, cfg: TrainConfig, use_cpu: bool) -> dict[str, Any]:
        g = cfg.galore
        return {
            "optim": "galore_adamw_layerwise" if g.layerwise else "galore_adamw",
            "optim_target_modules": _targets(g.target),
            "optim_args": f"rank={g.rank},update_proj_gap={g.update_interval},scale={g.scale},"
            f"proj_type={g.proj_type}",
        }


class ApolloMethod(FullMethod):
    name = "apollo"
    config_sections = frozenset({"apollo"})

    def optimizer_args(self, cfg: TrainConfig, use_cpu: bool) -> dict[str, Any]:
        a = cfg.apollo
        args = f"rank={a.rank},proj={a.proj},scale_type={a.scale_type},update_proj_gap={a.update_interval}"
        args += f",scale={a.scale},proj_type={a.proj_type}"
        return {
            "optim": "apollo_adamw_layerwise" if a.layerwise else "apollo_adamw",
            "optim_target_modules": _targets(a.target),
            "optim_args": args,
        }


class BadamMethod(FullMethod):
    name = "badam"
    config_sections = frozenset({"badam"})

    def create_optimizer(self, model: Any, args: Any, cfg: TrainConfig) -> Any:
        """layer mode: AdamW on one block of layers at a time; ratio mode: on a share of every weight."""
        import torch
        from badam import BlockOptimizer, BlockOptimizerRatio

        b = cfg.badam
        named = list(model.named_parameters())
        decay = [p for n, p in named if p.ndim >= 2]
        no_decay = [p for n, p in named if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        adam = {
            "lr": args.learning_rate,
            "betas": (args.adam_beta1, args.adam_beta2),
            "eps": args.adam_epsilon,
        }
        if b.mode == "layer":
            return BlockOptimizer(
                base_optimizer=torch.optim.AdamW(groups, **adam),
                named_parameters_list=named,
                block_prefix_list=None,
                switch_block_every=b.switch_interval,
                start_block=b.start_block,
                switch_mode=b.switch_mode,
                verbose=b.verbose,
                ds_zero3_enabled=False,
            )
        return BlockOptimizerRatio(
            param_groups=groups,
            named_parameters_list=named,
            update_ratio=b.update_ratio,
            switch_every=b.switch_interval,
            mask_mode=b.mask_mode,
            verbose=b.verbose,
            include_embedding=False,
            # tied embeddings have no lm_head parameter (badam would fail freezing it); frozen with them
            include_lm_head=not any("lm_head" in n for n, _ in named),
            **adam,
        )
