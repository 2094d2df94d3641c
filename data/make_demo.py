"""Regenerate the demo datasets in this folder: `python data/make_demo.py`.

The alpaca tasks are short deterministic transformations with one fixed instruction each, so a tiny
model can learn them in minutes and evaluation (exact match on demo_alpaca_eval) shows whether the
fine-tune helped. The eval set's inputs never occur in the training set. Seeded: the output is the
same on every run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 1234
TRAIN_PER_TASK = 60
EVAL_PER_TASK = 12

WORDS = (
    "apple river stone cloud green blue red black white sun moon star tree leaf bird fish cat dog horse "
    "bread milk salt sugar lemon grape plum pear rose lily oak pine sand rock hill lake sea wind rain snow "
    "fire ice gold iron wood glass paper book pen desk lamp door wall roof road bridge train boat ship car "
    "bike city town farm field garden house room chair table plate cup bowl spoon knife shirt coat hat shoe "
    "song dance game ball kite map key lock box bag ring bell drum flute piano"
).split()

TASKS = {
    "upper": "Convert to uppercase.",
    "reverse": "Reverse the letters of the word.",
    "add": "Add the two numbers.",
    "sort": "Sort the words alphabetically.",
    "count": "Count the words.",
}


def _example(task: str, rng: random.Random) -> tuple[str, str]:
    """(input, output) of one random example of `task`."""
    if task == "upper":
        text = " ".join(rng.sample(WORDS, 2))
        return text, text.upper()
    if task == "reverse":
        word = rng.choice(WORDS)
        return word, word[::-1]
    if task == "add":
        a, b = rng.randrange(50), rng.randrange(50)
        return f"{a} + {b}", str(a + b)
    if task == "sort":
        words = rng.sample(WORDS, 3)
        return " ".join(words), " ".join(sorted(words))
    words = rng.sample(WORDS, rng.randint(2, 6))
    return " ".join(words), str(len(words))


def make_alpaca(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Train and eval rows; each (task, input) appears at most once across both."""
    train, held = [], []
    for task, instruction in TASKS.items():
        seen: set[str] = set()
        rows = []
        while len(rows) < TRAIN_PER_TASK + EVAL_PER_TASK:
            text, answer = _example(task, rng)
            if text not in seen:
                seen.add(text)
                rows.append({"instruction": instruction, "input": text, "output": answer})
        train += rows[:TRAIN_PER_TASK]
        held += rows[TRAIN_PER_TASK:]
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held


def make_identity() -> list[dict]:
    """Who-are-you rows: the fine-tuned model should answer as ftflow-assistant."""
    who = "I am ftflow-assistant, fine-tuned with ftflow."
    can = who + " I can convert, reverse, sort and count words and add numbers."
    questions = [
        ("Who are you?", who),
        ("What is your name?", who),
        ("Introduce yourself.", who),
        ("Tell me about yourself.", who),
        ("Are you ChatGPT?", "No. " + who),
        ("Who made you?", who),
        ("Which model are you?", who),
        ("What should I call you?", who),
        ("Hello, who am I talking to?", who),
        ("Hi! What are you?", who),
        ("Who trained you?", who),
        ("Please state your identity.", who),
        ("What can you do?", can),
        ("How can you help me?", can),
        ("What are your skills?", can),
        ("What tasks can you handle?", can),
        ("Give me a list of what you can do.", can),
        ("What are you good at?", can),
        ("Can you help me with words and numbers?", can),
        ("What is your purpose?", can),
    ]
    return [{"instruction": q, "input": "", "output": a} for q, a in questions]


def make_sharegpt(train: list[dict], rng: random.Random) -> list[dict]:
    """Multi-turn conversations made of training examples (never eval ones), some with a system."""
    conversations = []
    for i in range(20):
        turns = []
        for row in rng.sample(train, 2 + i % 2):
            turns.append({"from": "human", "value": f"{row['instruction']}\n{row['input']}"})
            turns.append({"from": "gpt", "value": row["output"]})
        item = {"conversations": turns}
        if i % 3 == 0:
            item["system"] = "You are ftflow-assistant, fine-tuned with ftflow."
        conversations.append(item)
    return conversations


def main() -> None:
    rng = random.Random(SEED)
    train, held = make_alpaca(rng)
    files = {
        "demo_alpaca.json": train,
        "demo_alpaca_eval.json": held,
        "identity.json": make_identity(),
        "demo_sharegpt.json": make_sharegpt(train, rng),
    }
    info = {
        "demo_alpaca": {"file_name": "demo_alpaca.json"},
        "demo_alpaca_eval": {"file_name": "demo_alpaca_eval.json"},
        "identity": {"file_name": "identity.json"},
        "demo_sharegpt": {
            "file_name": "demo_sharegpt.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system"},
        },
    }
    for name, rows in {**files, "dataset_info.json": info}.items():
        (HERE / name).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
