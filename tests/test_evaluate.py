"""Evaluation metrics and the loss the evaluate stage reports."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch

from ftcore import stages
from ftcore.data.template import get_template
from ftcore.evaluate.generate import generate_answers
from ftcore.evaluate.loss import eval_loss
from ftcore.evaluate.metrics import exact_match, rouge_l, score
from ftcore.modeling import load_model, load_tokenizer
from tests.helpers import prepared_inputs, small_config


def test_exact_match_normalizes_whitespace_only() -> None:
    assert exact_match(" HELLO  world ", "HELLO world") == 1.0
    assert exact_match("hello world", "HELLO world") == 0.0


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("a b c d", "a b c d", 1.0),
        ("a b x d", "a b c d", 0.75),  # LCS 3 of 4 both ways
        ("a b", "a b c d", 2 * (1.0 * 0.5) / 1.5),  # precision 1, recall 0.5
        ("x y", "a b", 0.0),
        ("", "", 1.0),
        ("", "a", 0.0),
        ("你好世界", "你好", 2 * (0.5 * 1.0) / 1.5),  # no spaces: characters are the units
    ],
)
def test_rouge_l(prediction: str, reference: str, expected: float) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_score_averages() -> None:
    assert score(["a", "b"], ["a", "c"]) == {"exact_match": 0.5, "rouge_l": 0.5}


def test_eval_loss_is_token_weighted_masked_cross_entropy(tiny_qwen2: Path) -> None:
    model = load_model(tiny_qwen2, dtype="float32", device="cpu")
    rows = {"input_ids": [[5, 6, 7, 8, 9], [10, 11, 12]], "labels": [[-100, -100, 7, 8, 9], [-100, 11, 12]]}
    rows["attention_mask"] = [[1] * len(x) for x in rows["input_ids"]]
    result = eval_loss(model, datasets.Dataset.from_dict(rows), pad_token_id=0, batch_size=2)

    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(rows["input_ids"], rows["labels"], strict=True):
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            for pos in range(1, len(ids)):
                if labels[pos] != -100:
                    total -= torch.log_softmax(logits[pos - 1], -1)[labels[pos]].item()
                    count += 1
    assert result["eval_loss"] == pytest.approx(total / count, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_generation_stops_at_end_of_turn(tiny_qwen2: Path) -> None:
    model = load_model(tiny_qwen2, dtype="float32", device="cpu")
    tokenizer = load_tokenizer(tiny_qwen2)
    rows = [
        {
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x"}],
            "system": None,
        }
    ] * 3
    answers = generate_answers(model, tokenizer, get_template("qwen"), rows, max_new_tokens=5, batch_size=2)
    assert len(answers) == 3
    assert len(set(answers)) == 1, "greedy decoding of the same prompt is deterministic, padding or not"
    assert "<|im_end|>" not in answers[0]


def test_evaluate_stage_writes_metrics_and_samples(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    model, data = prepared_inputs(cfg)
    result = stages.evaluate(cfg, model, data, None)
    metrics = result.metadata["metrics"]
    assert set(metrics) == {"base/eval_loss", "base/perplexity", "base/exact_match", "base/rouge_l"}
    samples = (Path(result.path) / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 4
