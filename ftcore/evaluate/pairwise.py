"""Pairwise evaluation of rm and preference models on held-out chosen / rejected pairs.

A pair's margin is score(chosen) - score(rejected): for a reward model its score head's output, for a
policy (dpo, kto, orpo, simpo) the summed log-probability of the response tokens (the implicit reward,
up to beta and the reference, which `compare_base` evaluates alongside). pairwise_accuracy is the share
of pairs with a positive margin; reward_margin is the mean margin.
"""

from __future__ import annotations

from typing import Any

from ftcore.data.processor import IGNORE_INDEX


def _batches(dataset: Any, size: int) -> Any:
    for start in range(0, len(dataset), size):
        yield dataset[start : start + size]


def _padded(rows: list[list[int]], pad: int) -> Any:
    import torch

    length = max(len(r) for r in rows)
    ids = torch.tensor([list(r) + [pad] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    return ids, mask


def response_logps(model: Any, input_ids: list[list[int]], labels: list[list[int]], pad: int) -> Any:
    """Summed log-probability of each row's supervised (label != -100) tokens."""
    import torch

    ids, mask = _padded(input_ids, pad)
    lab, _ = _padded(labels, IGNORE_INDEX)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    target = lab[:, 1:].to(device)
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = torch.gather(logp, 2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (target != IGNORE_INDEX)).sum(-1).cpu()


def scores(model: Any, input_ids: list[list[int]], pad: int) -> Any:
    """A score-head model's one number per row (read at the last real token, by its pad_token_id)."""
    ids, mask = _padded(input_ids, pad)
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().squeeze(-1).cpu()


def pairwise_metrics(model: Any, dataset: Any, pad_token_id: int, batch_size: int = 8) -> dict[str, float]:
    """pairwise_accuracy, reward_margin, chosen_reward, rejected_reward over a pairwise feature set."""
    import torch

    from ftcore.train.methods import is_score_model

    score_head = is_score_model(getattr(model, "base_model", model)) or is_score_model(model)
    if score_head and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_token_id
    chosen, rejected = [], []
    model.eval()
    with torch.no_grad():
        for batch in _batches(dataset, batch_size):
            if score_head:
                chosen.append(scores(model, batch["chosen_input_ids"], pad_token_id))
                rejected.append(scores(model, batch["rejected_input_ids"], pad_token_id))
            else:
                chosen.append(
                    response_logps(model, batch["chosen_input_ids"], batch["chosen_labels"], pad_token_id)
                )
                rejected.append(
                    response_logps(model, batch["rejected_input_ids"], batch["rejected_labels"], pad_token_id)
                )
    if not chosen:
        return {}
    c, r = torch.cat(chosen), torch.cat(rejected)
    return {
        "pairwise_accuracy": float((c > r).float().mean()),
        "reward_margin": float((c - r).mean()),
        "chosen_reward": float(c.mean()),
        "rejected_reward": float(r.mean()),
    }


def kto_metrics(model: Any, dataset: Any, pad_token_id: int, batch_size: int = 8) -> dict[str, float]:
    """kto rows are unpaired: every desirable row against every undesirable one. pairwise_accuracy is
    the share of such pairs the model scores the right way round, reward_margin the difference of the
    mean response log-probabilities (desirable minus undesirable)."""
    import torch

    logps, tags = [], []
    model.eval()
    with torch.no_grad():
        for batch in _batches(dataset, batch_size):
            logps.append(response_logps(model, batch["input_ids"], batch["labels"], pad_token_id))
            tags += [bool(t) for t in batch["kto_tags"]]
    if not logps:
        return {}
    values, mask = torch.cat(logps), torch.tensor(tags)
    good, bad = values[mask], values[~mask]
    if not len(good) or not len(bad):
        return {}
    return {
        "pairwise_accuracy": float((good[:, None] > bad[None, :]).float().mean()),
        "reward_margin": float(good.mean() - bad.mean()),
        "chosen_reward": float(good.mean()),
        "rejected_reward": float(bad.mean()),
    }


def preference_metrics(
    model: Any, dataset: Any, pad_token_id: int, batch_size: int = 8
) -> dict[str, float] | None:
    """The pairwise metrics of a pairwise or kto feature set; None for other sets (sft, pt)."""
    if is_preference_set(dataset):
        if "kto_tags" in dataset.column_names:
            return kto_metrics(model, dataset, pad_token_id, batch_size)
        return pairwise_metrics(model, dataset, pad_token_id, batch_size)
    return None


def is_preference_set(dataset: Any) -> bool:
    """Pairwise (chosen_/rejected_ columns) or kto (kto_tags) features, as the data contract names them."""
    columns = set(dataset.column_names)
    return "kto_tags" in columns or {"chosen_input_ids", "rejected_input_ids"} <= columns
