"""Evaluation metrics and the loss the evaluate stage reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pytest
import torch

from ftcore import steps
from ftcore.data.template import get_template
from ftcore.evaluate.generate import generate_answers
from ftcore.evaluate.loss import eval_loss
from ftcore.evaluate.metrics import METRICS, exact_match
from ftcore.modeling import load_model, load_tokenizer
from tests.helpers import prepared_inputs, small_config


def test_exact_match_normalizes_whitespace_only() -> None:
    assert exact_match(" HELLO  world ", "HELLO world") == 1.0
    assert exact_match("hello world", "HELLO world") == 0.0


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
    result = steps.evaluate(cfg, model, data, None)
    metrics = result.metadata["metrics"]
    assert set(metrics) == {f"base/{name}" for name in ("eval_loss", "perplexity", *METRICS)}
    samples = [json.loads(line) for line in (Path(result.path) / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4
    for sample in samples:  # per-sample scores, whose means are the step's metrics
        assert set(sample) == {"prompt", "reference", "base", "scores"}
        assert set(sample["scores"]["base"]) == set(METRICS)
    for name in METRICS:
        mean = sum(s["scores"]["base"][name] for s in samples) / len(samples)
        assert metrics[f"base/{name}"] == pytest.approx(mean)
    report = (Path(result.path) / "comparison.md").read_text()
    assert "| metric | better | base (builtin:tiny-qwen2) |" in report and "| rouge_l | higher |" in report


# --- the chunked loss: equal to the full-logits loss, never the full logits of a batch ----------------


def _random_rows(vocab: int, count: int = 6, seed: int = 0) -> datasets.Dataset:
    """Rows of different lengths with a masked prompt and a labelled answer, as preprocess makes them."""
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list] = {"input_ids": [], "labels": [], "attention_mask": []}
    for i in range(count):
        length = 6 + 5 * i
        ids = torch.randint(0, vocab, (length,), generator=gen).tolist()
        prompt = 2 + i % 4
        rows["input_ids"].append(ids)
        rows["labels"].append([-100] * prompt + ids[prompt:])
        rows["attention_mask"].append([1] * length)
    return datasets.Dataset.from_dict(rows)


def _full_logits_loss(model, rows: datasets.Dataset) -> float:
    """Reference: the model's own forward, one unpadded row at a time, log-softmax of every label."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(rows["input_ids"], rows["labels"], strict=True):
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            for pos in range(1, len(ids)):
                if labels[pos] != -100:
                    total -= torch.log_softmax(logits[pos - 1], -1)[labels[pos]].item()
                    count += 1
    return total / count


def _head_calls(model) -> list[int]:
    """Tokens projected by each call of the output head (rows of its output, over all dimensions)."""
    calls: list[int] = []
    head = (model.get_base_model() if hasattr(model, "get_base_model") else model).get_output_embeddings()
    head.register_forward_hook(lambda _m, _i, out: calls.append(out.numel() // out.shape[-1]))
    return calls


def _tiny(arch: str):
    """Random-weight models whose forward changes lm_head's output (scale, divide, soft-cap)."""
    import transformers

    dims = {"vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    dims |= {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}
    config = {
        "granite": transformers.GraniteConfig(logits_scaling=8.0, **dims),
        "cohere": transformers.CohereConfig(logit_scale=0.0625, **dims),
        "gemma2": transformers.Gemma2Config(final_logit_softcapping=0.5, initializer_range=0.5, **dims),
    }[arch]
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-llama", "lora", "granite", "cohere", "gemma2"])
def test_chunked_loss_equals_full_logits_loss(name: str) -> None:
    from ftcore.builtin import ensure_builtin

    if name in ("granite", "cohere", "gemma2"):
        model = _tiny(name)
    else:
        model = load_model(ensure_builtin("tiny-llama" if name == "lora" else name), dtype="float32")
    if name == "lora":  # LoRA with non-zero B, so the adapter changes the loss
        from peft import LoraConfig, get_peft_model

        base_loss = _full_logits_loss(model, _random_rows(model.config.vocab_size))
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
        model.eval()
    rows = _random_rows(model.config.vocab_size)
    calls = _head_calls(model)
    result = eval_loss(model, rows, pad_token_id=0, batch_size=4, chunk_tokens=16)
    used = list(calls)
    assert result["eval_loss"] == pytest.approx(_full_logits_loss(model, rows), rel=1e-5)
    if name == "lora":
        assert abs(result["eval_loss"] - base_loss) > 1e-3, "the adapter must be active in the loss"
    labelled = sum(sum(label != -100 for label in labels[1:]) for labels in rows["labels"])
    assert result["eval_tokens"] == labelled
    # A check of the first row's last positions (the model's forward, then the split), then chunks
    # of at most 16 labelled tokens: never batch x length.
    check = min(8, len(rows["input_ids"][0]))
    assert max(used) <= 16 and sum(used) == 2 * check + labelled, used


def test_chunked_loss_falls_back_when_it_cannot_reproduce_the_logits(
    tiny_llama: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_model(tiny_llama, dtype="float32")
    model.config.logits_scaling = 8.0  # Llama's forward ignores it; the chunked path would divide
    rows = _random_rows(model.config.vocab_size)
    with caplog.at_level("WARNING", logger="ftcore"):
        result = eval_loss(model, rows, pad_token_id=0, batch_size=4, chunk_tokens=16)
    assert result["eval_loss"] == pytest.approx(_full_logits_loss(model, rows), rel=1e-5)
    assert "using full logits" in caplog.text


def test_default_chunk_bounds_the_logits_memory(tiny_qwen2: Path) -> None:
    from ftcore.evaluate.loss import CHUNK_BYTES

    model = load_model(tiny_qwen2, dtype="float32")
    rows = _random_rows(model.config.vocab_size, count=8)
    calls = _head_calls(model)
    eval_loss(model, rows, pad_token_id=0, batch_size=8)
    assert calls
    assert max(calls) * model.config.vocab_size * 4 <= CHUNK_BYTES
    batch_tokens = 8 * max(map(len, rows["input_ids"]))
    assert max(calls) < batch_tokens, "the full logits of a batch were built"


# --- the evaluate stage: precision, batches, the shared base scores, progress -------------------------


def _generate_batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Prompts per call of transformers' generate (the real method, wrapped to count its calls)."""
    from transformers.generation.utils import GenerationMixin

    sizes: list[int] = []
    original = GenerationMixin.generate

    def counted(self, *args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", counted)
    return sizes


def test_evaluate_keys_see_precision_and_share_base_scores(tmp_path: Path) -> None:
    from ftcore.artifacts import Artifact
    from ftcore.steps.keys import eval_dtype, evaluate_base_key, evaluate_key

    model = Artifact(kind="model", path="m", fingerprint="M")
    data = Artifact(
        kind="tokenized", path="d", fingerprint="D", metadata={"template": "qwen", "eval_fingerprint": "E"}
    )
    new_train_split = data.model_copy(update={"fingerprint": "D2"})
    new_eval_split = data.model_copy(update={"metadata": {**data.metadata, "eval_fingerprint": "E2"}})
    trained = Artifact(kind="adapter", path="t", fingerprint="T")
    cfg = small_config(tmp_path)

    def base_key(*overrides: str, model: Artifact = model, data: Artifact = data) -> str:
        return evaluate_base_key(small_config(tmp_path, *overrides), model, data)

    base = base_key()
    for same in (
        ("train.learning_rate=1e-4",),
        ("train.finetuning_type=full",),
        ("eval.compare_base=false",),
    ):
        assert base_key(*same) == base, same
    assert base_key(data=new_train_split) == base
    assert base_key(data=new_eval_split) != base
    assert base_key(model=model.model_copy(update={"fingerprint": "M2"})) != base
    assert base_key("eval.max_new_tokens=9") != base
    assert base_key("eval.num_beams=2") != base and base_key("eval.do_sample=true") != base
    assert base_key("eval.temperature=0.5", "eval.seed=7") == base, "greedy decoding ignores them"
    sampled = base_key("eval.do_sample=true")
    assert base_key("eval.do_sample=true", "eval.temperature=0.5") != sampled
    assert base_key("eval.do_sample=true", "eval.seed=7") != sampled
    assert base_key("train.bf16=true") != base

    tuned = evaluate_key(cfg, model, data, trained)
    assert evaluate_key(cfg, model, new_train_split, trained) == tuned  # training data is in `trained`
    assert evaluate_key(small_config(tmp_path, "train.bf16=true"), model, data, trained) != tuned
    assert evaluate_key(small_config(tmp_path, "eval.compare_base=false"), model, data, trained) != tuned
    if not torch.cuda.is_available():
        assert eval_dtype(cfg) == "float32", "CPU evaluates in fp32 unless train.bf16 says otherwise"
    assert eval_dtype(small_config(tmp_path, "train.bf16=true")) == "bfloat16"


def test_evaluate_runs_in_training_precision(tmp_path: Path) -> None:
    cfg = small_config(
        tmp_path / "job", "train.report_to=none", "train.bf16=true", "eval.generation_samples=0"
    )
    model, data = prepared_inputs(cfg)
    result = steps.evaluate(cfg, model, data, None)
    assert result.metadata["dtype"] == "bfloat16"

    eval_set = datasets.load_from_disk(str(Path(data.path) / "eval")).select(range(cfg.eval.max_samples))
    pad = load_tokenizer(model.path).pad_token_id
    bf16 = eval_loss(load_model(model.path, dtype="bfloat16"), eval_set, pad)["eval_loss"]
    fp32 = eval_loss(load_model(model.path, dtype="float32"), eval_set, pad)["eval_loss"]
    assert abs(bf16 - fp32) > 1e-4, "precondition: the two precisions give different losses"
    assert result.metadata["metrics"]["base/eval_loss"] == pytest.approx(bf16, rel=1e-6)


def test_evaluate_generates_in_batches_of_eval_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none", "eval.batch_size=3")
    model, data = prepared_inputs(cfg)
    sizes = _generate_batch_sizes(monkeypatch)
    steps.evaluate(cfg, model, data, None)
    assert sizes == [3, 1]


def test_base_model_is_scored_once_for_a_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = _generate_batch_sizes(monkeypatch)
    results, calls = [], []
    jobs = [("lora", "1e-3"), ("lora", "2e-3"), ("full", "1e-4")]
    for method, lr in jobs:
        cfg = small_config(
            tmp_path / f"{method}-{lr}",
            "train.report_to=none",
            f"train.finetuning_type={method}",
            f"train.learning_rate={lr}",
            "train.max_steps=2",
            "eval.max_new_tokens=7",  # eval settings no other test uses: the base is not cached yet
        )
        model, data = prepared_inputs(cfg)
        trained = steps.train(cfg, model, data)
        before = len(sizes)
        results.append(steps.evaluate(cfg, model, data, trained))
        calls.append(len(sizes) - before)
        if len(results) == 1:
            base_dir = Path(results[0].metadata["base_scores"])
            first_mtime = (base_dir / "ftflow-manifest.json").stat().st_mtime_ns
    assert calls == [2, 1, 1], "base and tuned generate in the first job, only the tuned model later"
    assert {r.metadata["base_scores"] for r in results} == {str(base_dir)}
    assert base_dir.parent.name == "eval-base"
    assert (base_dir / "ftflow-manifest.json").stat().st_mtime_ns == first_mtime
    metrics = [r.metadata["metrics"] for r in results]
    bases = [{k: v for k, v in m.items() if k.startswith("base/")} for m in metrics]
    assert bases[0] == bases[1] == bases[2] and len(bases[0]) == 2 + len(METRICS)
    assert len({m["tuned/eval_loss"] for m in metrics}) == 3
    samples = [(Path(r.path) / "samples.jsonl").read_text().splitlines() for r in results]
    for lines in zip(*samples, strict=True):
        rows = [json.loads(line) for line in lines]
        assert rows[0]["base"] == rows[1]["base"] == rows[2]["base"]
        assert all("tuned" in row for row in rows)


def test_evaluate_logs_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none", "eval.batch_size=2")
    model, data = prepared_inputs(cfg)
    with caplog.at_level("INFO", logger="ftcore"):
        steps.evaluate(cfg, model, data, None)
    messages = [record.getMessage() for record in caplog.records]
    for expected in ("loss batch 1/8", "loss batch 8/8", "generating 2/4", "generating 4/4"):
        assert any(m.startswith(f"[evaluate] base: {expected} (") for m in messages), (expected, messages)


def test_damaged_base_scores_are_made_again(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none", "eval.max_new_tokens=5")
    model, data = prepared_inputs(cfg)
    first = steps.evaluate(cfg, model, data, None)
    base_dir = Path(first.metadata["base_scores"])
    (base_dir / "answers.json").write_text("[truncated")
    again = steps.evaluate(
        small_config(tmp_path / "other", "train.report_to=none", "eval.max_new_tokens=5"), model, data, None
    )
    assert again.metadata["metrics"] == first.metadata["metrics"]
    assert json.loads((base_dir / "answers.json").read_text()) == [
        json.loads(line)["base"] for line in (Path(first.path) / "samples.jsonl").read_text().splitlines()
    ]


def test_sampled_generation_is_seeded_and_leaves_the_global_rng_alone(tiny_qwen2: Path) -> None:
    from ftcore.config.sections import EvalConfig
    from ftcore.evaluate.generate import generation_options

    model, tokenizer = load_model(tiny_qwen2, dtype="float32", device="cpu"), load_tokenizer(tiny_qwen2)
    template = get_template("qwen2")
    rows = [
        {"messages": [{"role": "user", "content": f"Count to {i}"}, {"role": "assistant", "content": ""}]}
        for i in range(3)
    ]
    greedy_options = generation_options(EvalConfig())
    assert greedy_options == {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0}
    hot = generation_options(EvalConfig(do_sample=True, temperature=5.0, top_k=0, top_p=1.0))
    assert hot["temperature"] == 5.0 and hot["top_k"] == 0

    def answers(options, seed=None):
        return generate_answers(model, tokenizer, template, rows, 12, 2, options=options, seed=seed)

    greedy = answers(greedy_options)
    assert answers(None) == greedy, "greedy is the default"
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = answers(hot, seed=1)
    assert torch.equal(torch.get_rng_state(), state), "the caller's random state is not moved"
    assert answers(hot, seed=1) == first, "the same seed samples the same answers"
    assert first != greedy and answers(hot, seed=2) != first
    beams = generation_options(EvalConfig(num_beams=2, repetition_penalty=1.3))
    assert len(answers(beams)) == 3


def _register_champion(cfg, data, tags: dict[str, str] | None = None) -> int:
    """A version of registry.model_name in the job's sqlite store, scored on `data`'s eval set (its
    recorded tags, as the register step writes them), with the `champion` alias on it."""
    from ftcore import registry, tracking
    from ftcore.steps.keys import eval_identity

    client = tracking.get_client(tracking.resolve_tracking_uri(None, cfg.workdir_path))
    registry.ensure_registered_model(client, cfg.registry.model_name)
    identity = eval_identity(cfg, data)
    recorded = {
        registry.EVAL_FINGERPRINT_TAG: identity["eval_fingerprint"],
        registry.EVAL_CONFIG_TAG: identity["eval_config"],
        "metric.tuned/eval_loss": "0.5",
        "metric.tuned/rouge_l": "0.75",
        **(tags or {}),
    }
    version = client.create_model_version(
        cfg.registry.model_name, source=str(cfg.workdir_path), tags=recorded
    )
    client.set_registered_model_alias(cfg.registry.model_name, registry.CHAMPION, version.version)
    return int(version.version)


def test_comparison_shows_base_champion_and_candidate_in_the_job_run(tmp_path: Path) -> None:
    """A sqlite registry with a champion scored on the same eval set: comparison.md has three columns,
    the champion's recorded numbers, and is the description of the job's MLflow run; a champion
    scored on another eval set is named but its numbers are not shown."""
    from ftcore import tracking
    from ftcore.evaluate.compare import eval_report
    from ftcore.steps.keys import eval_identity

    cfg = small_config(tmp_path / "job", "train.max_steps=2", "eval.max_new_tokens=6")
    model, data = prepared_inputs(cfg)
    version = _register_champion(cfg, data)
    trained = steps.train(cfg, model, data)
    result = steps.evaluate(cfg, model, data, trained)
    report = (Path(result.path) / "comparison.md").read_text()
    header = "| metric | better | base (builtin:tiny-qwen2) | champion v1 | candidate (this job) |"
    assert (
        header in report
        and f"champion ({cfg.registry.model_name}@champion) at evaluation time: v{version}" in report
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert "| **0.5** |" in rows["eval_loss"], "the champion's loss is the lowest"
    assert "0.75" in rows["rouge_l"] and set(METRICS) <= set(rows)

    client = tracking.get_client(tracking.resolve_tracking_uri(None, cfg.workdir_path))
    run = client.get_run(trained.metadata["mlflow_run_id"])
    assert run.data.tags["mlflow.note.content"] == report
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/comparison.md", "eval/samples.jsonl", "eval/metrics.json"} <= logged

    _register_champion(cfg, data, {"ftflow.eval_fingerprint": "another-eval-set"})
    other = eval_report(cfg, eval_identity(cfg, data), {"base": {"eval_loss": 2.0}}, 4)
    assert "| eval_loss | lower | 2 | n/a |" in other and "champion v2: scored on another eval set" in other
