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


def _runs_past_end_of_turn(tiny_qwen2: Path, tokenizer, out: Path) -> tuple[int, int, int]:
    """A tiny model that, after the generation prompt, says `A`, then <|im_end|>, then `X` forever:
    the attention and MLP outputs are zeroed, so each next token depends on the current one only,
    and the output head maps "\n" -> A -> <|im_end|> -> X -> X. Saved with a base model's
    generation_config whose only eos is <|endoftext|>. Returns (A, <|im_end|>, X)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(tiny_qwen2)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hidden = model.model.norm(model.model.embed_tokens.weight)  # what the head sees per token
        (newline,) = tokenizer.encode("\n", add_special_tokens=False)
        (answer,) = tokenizer.encode("Hello", add_special_tokens=False)
        (more,) = tokenizer.encode(" world", add_special_tokens=False)
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        head = torch.zeros_like(model.lm_head.weight)
        head[answer], head[end], head[more] = hidden[newline], hidden[answer], hidden[end] + hidden[more]
        model.lm_head.weight.copy_(head)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|endoftext|>")], pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return answer, end, more


def test_generation_stops_at_end_of_turn(tiny_qwen2: Path, tmp_path: Path) -> None:
    from ftcore.data.template import apply_template

    tokenizer = load_tokenizer(tiny_qwen2)
    template = get_template("qwen2")
    answer, end, more = _runs_past_end_of_turn(tiny_qwen2, tokenizer, tmp_path)
    prompt = template.encode_prompt(tokenizer, [{"role": "user", "content": "Say hello"}])
    inputs = {
        "input_ids": torch.tensor([prompt]),
        "attention_mask": torch.ones(1, len(prompt), dtype=torch.long),
    }

    # Left alone (a base model's generation_config), the model runs past its end of turn ...
    raw = load_model(tmp_path, dtype="float32", device="cpu")
    assert raw.generate(**inputs, max_new_tokens=5)[0, len(prompt) :].tolist() == [
        answer,
        end,
        more,
        more,
        more,
    ]

    # ... the generation_config ftflow writes with the template stops it right there, raw ids checked,
    apply_template(template, tmp_path, tokenizer)
    model = load_model(tmp_path, dtype="float32", device="cpu")
    assert model.generate(**inputs, max_new_tokens=5)[0, len(prompt) :].tolist() == [answer, end]

    # ... and evaluation's batched, left-padded generation keeps only the turn's answer.
    rows = [
        {
            "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "x"}],
            "system": system,
        }
        for content, system in (
            ("Say hello", None),
            ("Please say hello to everyone", "Be brief."),
            ("Hi", None),
        )
    ]
    answers = generate_answers(raw, tokenizer, template, rows, max_new_tokens=5, batch_size=2)
    assert answers == [tokenizer.decode([answer]).strip()] * 3


def test_evaluate_stage_writes_metrics_and_samples(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    model, data = prepared_inputs(cfg)
    result = stages.evaluate(cfg, model, data, None)
    metrics = result.metadata["metrics"]
    assert set(metrics) == {"base/eval_loss", "base/perplexity", "base/exact_match", "base/rouge_l"}
    samples = (Path(result.path) / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 4
