"""Workload W1 of bench/train_throughput.py (issue 10), built locally and the same for every tool.

- The model: Qwen2 architecture, random weights (seed 0), hidden 512, 8 layers, 8 heads, 2 KV heads,
  MLP 1408, vocab 16384, tied embeddings (~30.75M parameters), with a byte-level BPE trained on the
  data below, Qwen's special tokens and chat template.
- The data: bench/data/alpaca_en_demo.json, 999 rows with the word counts of LLaMA-Factory's
  alpaca_en_demo row by row (instruction, input, output), filled with words drawn by their frequency
  in that file (so lengths, not content, match). `--make-data FILE` regenerates it from the real file;
  a real alpaca_en_demo.json can be used instead (train_throughput.py --alpaca FILE).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
DATASET = "alpaca_en_demo"
VOCAB = 16384
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_CHAT = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MODEL = dict(
    hidden_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    intermediate_size=1408,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
    rope_theta=1000000.0,
)


def make_data(real: Path, out: Path = DATA_DIR / f"{DATASET}.json") -> Path:
    """The length-matched stand-in for LLaMA-Factory's alpaca_en_demo.json (see the module doc)."""
    rows = json.loads(real.read_text())
    words = [w for row in rows for key in ("instruction", "input", "output") for w in row[key].split()]
    rng = random.Random(0)
    fake = [
        {
            key: " ".join(rng.choices(words, k=len(row[key].split())))
            for key in ("instruction", "input", "output")
        }
        for row in rows
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fake, indent=1))
    (out.parent / "dataset_info.json").write_text(json.dumps({DATASET: {"file_name": out.name}}, indent=1))
    return out


def data_dir(alpaca: Path | None, work: Path) -> Path:
    """A dataset_dir holding `alpaca_en_demo` (the shipped stand-in, or a real file when given)."""
    if alpaca is None:
        return DATA_DIR
    folder = work / "alpaca-real"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(alpaca, folder / f"{DATASET}.json")
    (folder / "dataset_info.json").write_text(json.dumps({DATASET: {"file_name": f"{DATASET}.json"}}))
    return folder


def build_model(out: Path, data: Path, shape: dict | None = None) -> Path:
    """W1's model folder (built once: reused when config.json is there); `shape` overrides MODEL's
    sizes (bench/gpu_check.py's larger model for a GPU)."""
    if (out / "config.json").exists():
        return out
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rows = json.loads((data / f"{DATASET}.json").read_text())
    texts = [row[k] for row in rows for k in ("instruction", "input", "output") if row[k]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - len(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN_CHAT
    tokenizer.model_max_length = MODEL["max_position_embeddings"]
    config = Qwen2Config(
        vocab_size=VOCAB,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
        **{**MODEL, **(shape or {})},
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--make-data", type=Path, required=True, help="LLaMA-Factory's alpaca_en_demo.json")
    print(make_data(parser.parse_args().make_data))
