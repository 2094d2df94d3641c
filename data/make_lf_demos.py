"""Regenerate ftflow's samples shaped like LLaMA-Factory's demo datasets: `python data/make_lf_demos.py`.

Each file has the SAME shape, and dataset_info.json the SAME entry, as LLaMA-Factory's file of that
name (alpaca_en_demo, alpaca_zh_demo, glaive_toolcall_en_demo, dpo_en_demo, kto_en_demo, c4_demo), so a
LLaMA-Factory config naming them runs unchanged; the rows are ftflow's own, small and simple enough
for a tiny model to learn in a few steps (preferred answers are correct, rejected ones wrong).
Seeded: the output is the same on every run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 2026
N = 32

COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
ANIMALS = ["cat", "dog", "horse", "bird", "fish", "fox", "owl", "bear"]
CITIES = {"Paris": "France", "Rome": "Italy", "Madrid": "Spain", "Berlin": "Germany", "Lisbon": "Portugal"}
ZH_NUM = "零一二三四五六七八九"

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
    },
}
ADD_TOOL = {
    "name": "add_numbers",
    "description": "Add two integers",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}


def alpaca_en(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for i in range(N):
        a, b = rng.randrange(20), rng.randrange(20)
        if i % 3 == 0:
            rows.append({"instruction": "Add the two numbers.", "input": f"{a} + {b}", "output": str(a + b)})
        elif i % 3 == 1:
            animal = rng.choice(ANIMALS)
            rows.append(
                {
                    "instruction": f"Write the plural of the word '{animal}'.",
                    "input": "",
                    "output": animal + "s",
                }
            )
        else:
            words = rng.sample(COLORS, 3)
            rows.append(
                {
                    "instruction": "List these colors in alphabetical order.",
                    "input": ", ".join(words),
                    "output": ", ".join(sorted(words)),
                }
            )
    return rows


def alpaca_zh(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for _ in range(N):
        a, b = rng.randrange(10), rng.randrange(10)
        if a + b < 10:
            rows.append(
                {
                    "instruction": "计算两个数的和。",
                    "input": f"{ZH_NUM[a]}加{ZH_NUM[b]}",
                    "output": f"{ZH_NUM[a + b]}",
                }
            )
        else:
            rows.append({"instruction": "把这个数字写成汉字。", "input": str(a), "output": ZH_NUM[a]})
    return rows


def glaive_toolcall(rng: random.Random) -> list[dict]:
    tools = json.dumps([WEATHER_TOOL, ADD_TOOL], ensure_ascii=False)
    rows = []
    for i in range(N):
        if i % 4 == 3:  # no tool needed
            color = rng.choice(COLORS)
            conv = [
                {"from": "human", "value": f"Say the word {color} twice."},
                {"from": "gpt", "value": f"{color} {color}"},
            ]
        elif i % 2 == 0:
            city = rng.choice(sorted(CITIES))
            temp = rng.randrange(5, 30)
            call = {"name": "get_weather", "arguments": {"city": city}}
            conv = [
                {"from": "human", "value": f"What is the weather in {city} right now?"},
                {"from": "function_call", "value": json.dumps(call)},
                {
                    "from": "observation",
                    "value": json.dumps({"city": city, "temperature_c": temp, "sky": "clear"}),
                },
                {"from": "gpt", "value": f"It is {temp} degrees Celsius with a clear sky in {city}."},
            ]
        else:
            a, b = rng.randrange(100), rng.randrange(100)
            call = {"name": "add_numbers", "arguments": {"a": a, "b": b}}
            conv = [
                {"from": "human", "value": f"Please add {a} and {b} with the tool."},
                {"from": "function_call", "value": json.dumps(call)},
                {"from": "observation", "value": json.dumps({"result": a + b})},
                {"from": "gpt", "value": f"{a} plus {b} is {a + b}."},
            ]
        rows.append({"conversations": conv, "tools": tools})
    return rows


def dpo(rng: random.Random) -> list[dict]:
    rows = []
    for i in range(N):
        if i % 2 == 0:
            a, b = rng.randrange(20), rng.randrange(20)
            question, good, bad = (
                f"What is {a} plus {b}?",
                f"{a} plus {b} is {a + b}.",
                f"{a} plus {b} is {a + b + 3}.",
            )
        else:
            city = rng.choice(sorted(CITIES))
            wrong = rng.choice([c for c in CITIES.values() if c != CITIES[city]])
            question, good, bad = (
                f"Which country is {city} in?",
                f"{city} is in {CITIES[city]}.",
                f"{city} is in {wrong}.",
            )
        rows.append(
            {
                "conversations": [{"from": "human", "value": question}],
                "chosen": {"from": "gpt", "value": good},
                "rejected": {"from": "gpt", "value": bad},
            }
        )
    return rows


def kto(rng: random.Random) -> list[dict]:
    rows = []
    for i in range(N):
        a, b = rng.randrange(20), rng.randrange(20)
        desirable = i % 2 == 0
        answer = a * b if desirable else a * b + rng.randrange(1, 9)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Multiply {a} by {b}."},
                    {"role": "assistant", "content": f"{a} times {b} is {answer}."},
                ],
                "label": desirable,
            }
        )
    return rows


def c4(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for _ in range(N):
        animal, color = rng.choice(ANIMALS), rng.choice(COLORS)
        city = rng.choice(sorted(CITIES))
        sentences = [
            f"The {color} {animal} lives near {city}.",
            f"{city} is a city in {CITIES[city]}.",
            f"Every morning the {animal} walks to the river and drinks the cold water.",
            f"People in {city} like the {color} {animal} very much.",
        ]
        rng.shuffle(sentences)
        rows.append({"text": " ".join(sentences)})
    return rows


def main() -> None:
    rng = random.Random(SEED)
    files = {
        "alpaca_en_demo.json": alpaca_en(rng),
        "alpaca_zh_demo.json": alpaca_zh(rng),
        "glaive_toolcall_en_demo.json": glaive_toolcall(rng),
        "dpo_en_demo.json": dpo(rng),
        "kto_en_demo.json": kto(rng),
    }
    for name, rows in files.items():
        (HERE / name).write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in c4(rng))
    (HERE / "c4_demo.jsonl").write_text(lines, encoding="utf-8")


if __name__ == "__main__":
    main()
