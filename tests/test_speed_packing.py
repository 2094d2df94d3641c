"""Speed switches that must not change the numbers: padding-free / packed rows with variable-length
attention give the per-example logits and loss of the padded batch; the chunked LM head + cross-entropy
gives the loss and gradients of the plain head; frozen weights get no gradients."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from ftcore.data.collator import FlatCollator, SFTCollator
from ftcore.data.packing import knapsack, pack_dataset
from ftcore.data.processor import IGNORE_INDEX
from ftcore.modeling import load_model
from ftcore.train import varlen
from ftcore.train.fused_loss import causal_lm_loss, plain_causal_lm


def _examples(vocab: int, lengths: tuple[int, ...] = (7, 19, 12, 30)) -> list[dict[str, list[int]]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in lengths:
        ids = torch.randint(3, vocab, (n,), generator=gen).tolist()
        prompt = n // 3
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


@pytest.fixture(scope="module")
def fp32_model(tiny_qwen2: Path):
    torch.manual_seed(0)
    model = load_model(
        tiny_qwen2, dtype="float32", device="cpu", model_kwargs={"attn_implementation": "sdpa"}
    )
    return model


def test_knapsack_fills_rows_like_llamafactory() -> None:
    bins = knapsack([5, 3, 9, 2, 7, 1, 12], 10)
    assert sorted(i for b in bins for i in b) == list(range(7))
    sizes = [sum([5, 3, 9, 2, 7, 1, 12][i] for i in b) for b in bins]
    # longest first, each row filled with the longest that still fits; the over-long one alone
    assert sizes == [10, 10, 7, 12]


@pytest.mark.parametrize("kernel", ["ftflow_varlen", "eager"])
def test_packed_rows_equal_unpacked_logits_and_loss(fp32_model, kernel: str) -> None:
    model = fp32_model
    examples = _examples(model.config.vocab_size)
    padded = SFTCollator(pad_token_id=0, pad_to_multiple_of=8)(examples)
    assert padded["input_ids"].shape[1] % 8 == 0
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        reference = model(**padded)
        name = varlen.register() if kernel == "ftflow_varlen" else kernel
        model.set_attn_implementation(name)
        flat = FlatCollator()(examples)
        packed_rows = pack_dataset(__import__("datasets").Dataset.from_list(examples), capacity=40, neat=True)
        assert len(packed_rows) < len(examples)  # several examples share a row
        packed = FlatCollator()(list(packed_rows))
        outs = [model(**flat, use_cache=False), model(**packed, use_cache=False)]
        model.set_attn_implementation("sdpa")
    for batch, out in zip([flat, packed], outs, strict=True):
        assert abs(out.loss.item() - reference.loss.item()) < 1e-5
        starts = batch["cu_seq_lens_q"].tolist()
        for s, e in itertools.pairwise(starts):
            seg = batch["input_ids"][0, s:e].tolist()
            i = next(i for i, ex in enumerate(examples) if ex["input_ids"] == seg)
            torch.testing.assert_close(out.logits[0, s:e], reference.logits[i, : e - s], atol=1e-5, rtol=0)


def test_chunked_head_loss_and_gradients_equal_the_plain_head(fp32_model, monkeypatch) -> None:
    import ftcore.train.fused_loss as fused

    monkeypatch.setattr(fused, "CHUNK", 16)  # several chunks even on a small batch
    model = fp32_model
    model.set_attn_implementation(varlen.register())
    batch = FlatCollator()(_examples(model.config.vocab_size))
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    model.zero_grad()
    plain = model(**batch).loss
    plain.backward()
    expected = [p.grad.clone() for p in params]
    model.zero_grad()
    assert plain_causal_lm(model) is model
    chunked = causal_lm_loss(model, batch)
    chunked.backward()
    model.set_attn_implementation("sdpa")
    assert abs(chunked.item() - plain.item()) < 1e-5
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)
    # gradient accumulation: sum / the number of label tokens of the whole accumulated batch
    half = causal_lm_loss(model, batch, num_items_in_batch=2 * int((batch["labels"][:, 1:] != -100).sum()))
    assert abs(half.item() - plain.item() / 2) < 1e-5
    model.zero_grad()


def test_frozen_base_is_bf16_without_gradients(tiny_qwen2: Path, tmp_path: Path) -> None:
    from ftcore.train.methods import method_for
    from tests.helpers import small_config

    cfg = small_config(tmp_path, "train.bf16=true")
    method = method_for(cfg)
    model = method.prepare(method.load(tiny_qwen2, cfg.train), cfg.train)
    model.set_attn_implementation(varlen.register())
    batch = FlatCollator()(_examples(model.config.vocab_size, (9, 14)))
    base = plain_causal_lm(model)
    assert base is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = causal_lm_loss(base, batch)
    loss.backward()
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    trained = [p for p in model.parameters() if p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 and p.grad is None for _, p in frozen)
    assert trained and all(p.grad is not None for p in trained)


def test_checkpointing_auto_follows_the_memory_estimate_and_keys_map(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ftcore.config import load_config
    from ftcore.config.methods import SpeedConfig
    from ftcore.train.methods.speed import checkpointing_by_estimate

    config = SimpleNamespace(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32)
    auto = SpeedConfig(gradient_checkpointing="auto")
    assert checkpointing_by_estimate(auto, config, tokens=10**7, bytes_per_value=2)  # ~TBs: on
    assert not checkpointing_by_estimate(auto, config, tokens=8, bytes_per_value=2)
    assert not checkpointing_by_estimate(SpeedConfig(gradient_checkpointing=False), config, 10**7, 2)
    flat = {"model_name_or_path": "builtin:tiny-qwen2", "stage": "sft", "dataset": "demo_alpaca"}
    cfg = load_config({**flat, "neat_packing": True, "packing": False, "workdir": str(tmp_path)})
    assert cfg.train.speed.neat_packing and cfg.train.speed.packing is False
