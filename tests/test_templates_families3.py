"""ftcore/data/templates/families3.yaml, and the templates of every file that this module checks against
an OFFICIAL Jinja chat template (tests/data/chat_templates, sources in SOURCES-D.md): the token ids of
ftflow's encoding and of the generation prompt equal `apply_chat_template(official Jinja)` for single-
and multi-turn conversations, with and without a system prompt. Entries without an official Jinja are
checked on their exact text, as LLaMA-Factory's template of the same name writes it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ftcore.data import template as template_module
from ftcore.data.template import get_template
from tests.helpers import MULTI, MULTI_CJK, REASONING, SINGLE, SYSTEM, SYSTEM_PLAIN

OFFICIAL = Path(__file__).parent / "data" / "chat_templates"
FAMILIES3 = yaml.safe_load((template_module.TEMPLATES_DIR / "families3.yaml").read_text())
CONVERSATIONS = {"single": SINGLE, "multi": MULTI, "multi-cjk": MULTI_CJK}


@dataclass(frozen=True)
class Official:
    """An official template file. `bos` / `eos`: the family's tokens, which the file and ftflow's
    `{bos_token}` / `{eos_token}` write; `system`: the system prompt tested (None: the official template
    has no system turn a training conversation keeps); `after_last`: what ftflow trains after the last
    reply that the file does not write; `kwargs`: extra apply_chat_template arguments."""

    file: str
    bos: str | None = None
    eos: str = "</s>"
    system: str | None = SYSTEM
    after_last: str = ""
    kwargs: tuple[tuple[str, str], ...] = ()


IM_END, ENDOFTEXT = "<|im_end|>", "<|endoftext|>"
VERIFIED = {
    "gemma": Official("gemma-7b-it.jinja", "<bos>", "<eos>", system=None),  # raises on a system turn
    # Llama 4 and Llama 3.2 Vision trim the system prompt only: tested with one without edge spaces
    "llama4": Official("llama4-instruct.jinja", "<|begin_of_text|>", "<|eot|>", SYSTEM_PLAIN),
    "mllama": Official(
        "llama3.2-vision-instruct.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
        SYSTEM_PLAIN,
        kwargs=(("date_string", "26 Jul 2024"),),
    ),
    "phi4_mini": Official("phi4-mini-instruct.jinja", ENDOFTEXT, ENDOFTEXT),
    "phi_small": Official("phi3-small-instruct.jinja", ENDOFTEXT, ENDOFTEXT),
    "qwen2_vl": Official("qwen2.5-vl-instruct.jinja", eos=IM_END),
    "openchat-3.6": Official("openchat-3.6-8b.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "zephyr": Official("zephyr.jinja", "<s>", "</s>"),
    "orion": Official("orion-14b-chat.jinja", "<s>", "</s>", system=None),  # drops a system prompt
    "solar": Official("solar-10.7b-instruct.jinja", "<s>", "</s>", after_last="</s>"),
    "smollm2": Official("smollm2-instruct.jinja", eos=IM_END),
    "opencoder": Official("opencoder-instruct.jinja", eos=IM_END),
    "marco": Official("marco-o1.jinja", eos=IM_END),
    "mistral_small": Official("mistral-small-24b-instruct.jinja", "<s>", "</s>"),
    "granite3_vision": Official("granite3.2-vision.jinja", eos="<|end_of_text|>"),
}
# The rest of families3.yaml: its exact text for one turn ("hi" / "ho", the default system prompt), as
# LLaMA-Factory's template of the same name writes it (bos <s>, eos </s> where it writes the model's).
USER = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def _chatml(system: str | None = None, reply: str = "ho") -> str:
    """One ChatML turn as these families write it."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n" if system else "") + USER + reply + "<|im_end|>\n"


THINK = "<think>\n\n</think>\n\n"  # the empty reasoning block trained when a reply has none
HELPFUL = "You are a helpful assistant."
VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.USER: hi ASSISTANT:ho</s>"
)
KIMI = "<|im_user|>user<|im_middle|>hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
LLAMA3 = (
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)
YI_VL = (
    "This is a chat between an inquisitive human and an AI assistant. Assume the role of the AI "
    "assistant. Read all the images carefully, and respond to the human's questions with informative, "
    "helpful, detailed and polite answers. 这是一个好奇的人类和一个人工智能助手之间的对话。"
    "假设你扮演这个AI助手的角色。仔细阅读所有的图像，并对人类的问题做出信息丰富、有帮助、详细的和礼貌的回答。\n\n"
)
SEED = (
    "You are an AI programming assistant, utilizing the Seed-Coder model, developed by ByteDance Seed, "
    "and you only answer questions related to computer science. For politically sensitive questions, "
    "security and privacy issues, and other non-computer science questions, you will refuse to answer.\n\n"
)
MINIMAX2 = "You are a helpful assistant. Your name is MiniMax-M2.1 and is built by MiniMax."
HY_PH = "<｜hy_place▁holder▁no▁{}｜>"
TEXT = {
    "smollm": _chatml(),
    "falcon_h1": "<s>" + _chatml(),
    "llama2_zh": "<s>[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n"
    "hi [/INST]ho</s>",
    "moonlight": "<|im_system|>system<|im_middle|>You are a helpful assistant provided by Moonshot-AI."
    f"<|im_end|>{KIMI}ho<|im_end|>",
    "kimi_vl": f"<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>{KIMI}"
    "◁think▷◁/think▷ho<|im_end|>",
    "lfm2": _chatml("You are a helpful AI assistant."),
    "lfm2_vl": _chatml("You are a helpful multimodal assistant by Liquid AI."),
    "minimax1": "<beginning_of_sentence>system ai_setting=assistant\nYou are a helpful assistant."
    "<end_of_sentence>\n<beginning_of_sentence>user name=user\nhi<end_of_sentence>\n"
    "<beginning_of_sentence>ai name=assistant\nho<end_of_sentence>\n",
    "minimax2": f"]~!b[]~b]system\n{MINIMAX2}[e~[\n]~b]user\nhi[e~[\n]~b]ai\n{THINK}ho[e~[\n",
    "youtu": f"<s><|User|>hi<|Assistant|>{THINK}ho<|end_of_text|>",
    "youtu_vl": f"<|begin_of_text|>system\n{HELPFUL}<|end_of_text|>\n<|begin_of_text|>user\nhi"
    "<|end_of_text|>\n<|begin_of_text|>assistant\nho<|end_of_text|>\n",
    "hunyuan_small": f"<｜hy_begin▁of▁sentence｜><｜hy_User｜>hi{HY_PH.format(8)}ho{HY_PH.format(2)}",
    "hy_dense_1_8b": "<s><｜hy_User｜>hi<｜hy_Assistant｜>ho</s>",
    "hy_dense_7b": "<s>hi<|extra_0|>ho</s>",
    "hy3": "<s><｜hy_User｜>hi<｜hy_Assistant｜><think></think>ho<｜hy_eos｜>",
    "seed_coder": f"<s>system\n{SEED}</s><s>user\nhi</s><s>assistant\nho</s>",
    "ministral3": "<s>[INST]hi[/INST]ho</s>",
    "qwen3_vl": _chatml(reply=THINK + "ho"),
    "qwen3_vl_nothink": _chatml(),
    "qwen3_omni": _chatml(reply=THINK + "ho"),
    "qwen3_omni_nothink": _chatml(),
    "qwen2_omni": _chatml(HELPFUL),
    "qwen2_audio": _chatml(HELPFUL),
    "keye_vl": _chatml(reply=THINK + "ho"),
    "intern_vl": "<s>"
    + _chatml(
        "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
    ),
    "intern_s1": "<s>" + _chatml(),
    "minicpm_v": _chatml(HELPFUL),
    "minicpm_v_4_6": _chatml(HELPFUL),
    "minicpm_o": _chatml(HELPFUL + " You can accept audio and text input and output voice and text."),
    "dots_ocr": "<|user|>hi<|endofuser|><|assistant|>ho<|endofassistant|></s>",
    "paligemma": "<s>hi\nho</s>",
    "gemma3n": "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nho<end_of_turn>\n",
    "llava": VICUNA,
    "llava_next": VICUNA,
    "llava_next_video": VICUNA,
    "video_llava": VICUNA,
    "llava_next_llama3": f"<|begin_of_text|>{LLAMA3}\n\nho<|eot_id|>",
    "llava_next_mistral": "<s>[INST] hi[/INST] ho</s>",
    "llava_next_video_mistral": "<s>[INST] hi[/INST] ho</s>",
    "llava_next_qwen": _chatml(HELPFUL),
    "llava_next_yi": _chatml(),
    "llava_next_video_yi": _chatml(),
    "yi_vl": f"{YI_VL}### Human: hi\n### Assistant:ho\n</s>",
    # LLaMA-Factory writes an empty reasoning block before the "\n" GLM puts after <|assistant|>; ftflow
    # after it, where GLM-4.1V-Thinking writes its reasoning
    "glm4v": f"[gMASK]<sop><|user|>\nhi<|assistant|>\n{THINK}ho<|endoftext|>",
    "glm_ocr": "[gMASK]<sop><|user|>\nhi<|assistant|>\nho<|endoftext|>",
}
# Checked against an official file here, but defined in templates.yaml / more.yaml: what
# tests/test_templates.py's test_every_verified_template_is_checked counts as checked by this module.
CHECKED = set(VERIFIED)


@pytest.fixture(scope="module")
def tokenizers():
    """A small byte-level BPE tokenizer that has every special token of the templates checked here
    (built once: the families' own tokenizers cannot be downloaded here, and what is checked is the
    text around the special tokens, which any tokenizer keeping them whole sees the same way), and a
    copy of it per verified family carrying that family's bos / eos. Newline runs are pre-tokenized
    whole, as the real Llama 3 / Qwen tokenizers' `\\s*[\\r\\n]+` rule does: GPT-2's rule alone splits
    "\\n\\n" differently at the end of a prompt segment than inside the whole text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    entries = [get_template(name) for name in set(FAMILIES3) | set(VERIFIED) | {"chatglm3"}]
    special = {"<s>", "</s>", "<unk>", "<bos>", "<eos>", ENDOFTEXT, IM_END, "<|eot|>", "<|end_of_text|>"}
    for t in entries:
        special.update(t.special_tokens + t.stop_words + ([t.efficient_eos] if t.efficient_eos else []))
    special.discard("{eos_token}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s*[\r\n]+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    corpus = [m["content"] for m in SINGLE + MULTI + MULTI_CJK + REASONING] + [SYSTEM, "hi ho user assistant"]
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(corpus * 5, trainer=trainer)
    backend.add_special_tokens(sorted(special))
    base = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    out = {"base": base}
    for name, spec in VERIFIED.items():
        tokenizer = copy.deepcopy(base)
        tokenizer.bos_token, tokenizer.eos_token = spec.bos, spec.eos
        out[name] = tokenizer
    return out


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _official(tokenizer, spec: Official, messages, system=None, **kwargs) -> list[int]:
    full = ([{"role": "system", "content": system}] if system else []) + messages
    jinja = (OFFICIAL / spec.file).read_text()
    out = tokenizer.apply_chat_template(
        full,
        tokenize=True,
        chat_template=jinja,
        bos_token=spec.bos or "",
        eos_token=spec.eos,
        **dict(spec.kwargs),
        **kwargs,
    )
    return list(out["input_ids"])


def _ours(tokenizer, template, messages, system=None) -> list[int]:
    return [i for p, r in template.encode_multiturn(tokenizer, messages, system) for i in p + r]


@pytest.mark.parametrize("name", VERIFIED)
@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("with_system", [False, True], ids=["default-system", "system"])
def test_encoding_matches_official_template(tokenizers, name, conversation, with_system):
    """Training ids and generation-prompt ids == the official template's. A default system prompt
    the official Jinja does not write itself (zephyr's is LLaMA-Factory's) is given to it explicitly."""
    spec, template = VERIFIED[name], get_template(name)
    if with_system and spec.system is None:
        pytest.skip(f"the official {name} template keeps no system prompt")
    assert template.verified_by == f"tests/data/chat_templates/{spec.file}"
    tokenizer, messages = tokenizers[name], CONVERSATIONS[conversation]
    template.check_tokenizer(tokenizer)
    system = spec.system if with_system else None
    official_system = system or template.default_system
    expected = _official(tokenizer, spec, messages, official_system) + _ids(tokenizer, spec.after_last)
    assert _ours(tokenizer, template, messages, system) == expected
    prompt = messages[:-1]
    expected = _official(tokenizer, spec, prompt, official_system, add_generation_prompt=True)
    assert template.encode_prompt(tokenizer, prompt, system) == expected


def test_chatglm3_differs_from_its_official_template_by_the_prefix_spaces(tokenizers):
    """chatglm3-6b's own template writes a space before every content (its SentencePiece tokenizer's
    prefix space) and no eos; ftflow writes LLaMA-Factory's text: nothing else differs."""
    template, tokenizer = get_template("chatglm3"), tokenizers["base"]
    jinja = (OFFICIAL / "chatglm3-6b.jinja").read_text()
    for messages in CONVERSATIONS.values():
        for system in (None, SYSTEM):
            full = ([{"role": "system", "content": system}] if system else []) + messages
            official = tokenizer.apply_chat_template(full, tokenize=False, chat_template=jinja)
            ours = "".join(p + r for p, r in template.render(tokenizer, messages, system))
            assert official.startswith("[gMASK]sop<|") and "|>\n " in official
            assert official.replace("|>\n ", "|>\n") + "</s>" == ours
            prompt = tokenizer.apply_chat_template(
                full[:-1], tokenize=False, chat_template=jinja, add_generation_prompt=True
            )
            ours_prompt = tokenizer.decode(template.encode_prompt(tokenizer, messages[:-1], system))
            assert prompt.replace("|>\n ", "|>\n") == ours_prompt


@pytest.mark.parametrize("name", TEXT)
def test_rendered_text(tokenizers, name):
    template, tokenizer = get_template(name), tokenizers["base"]
    assert template.verified_by is None
    template.check_tokenizer(tokenizer)
    turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]
    assert "".join(p + r for p, r in template.render(tokenizer, turn)) == TEXT[name]


def test_every_families3_template_is_checked():
    assert set(FAMILIES3) == (set(VERIFIED) & set(FAMILIES3)) | set(TEXT)
    assert set(TEXT).isdisjoint(VERIFIED)


THINKING = sorted(name for name, entry in FAMILIES3.items() if "thinking" in entry)


@pytest.mark.parametrize("name", THINKING)
def test_reasoning_kept_in_the_last_reply_only(tokenizers, name):
    """Reasoning families: history replies lose their reasoning, the last keeps it in the family's own
    markers, and a reply without any is trained with an empty block (LLaMA-Factory's ReasoningTemplate)."""
    template, tokenizer = get_template(name), tokenizers["base"]
    think = template.thinking
    messages = [
        dict(m, content=m["content"].replace("<think>\n", think.open).replace("\n</think>\n\n", think.close))
        for m in REASONING
    ]
    pairs = template.render(tokenizer, messages)
    text = "".join(p + r for p, r in pairs)
    assert "12 plus 7" not in text and f"{think.open}three and four{think.close}7" in pairs[-1][1]
    (_, response), *_ = template.render(tokenizer, SINGLE)
    assert think.empty + "enots" in response
    # the same ids through the tokenizer, so the markers stay whole
    ours = _ours(tokenizer, template, messages)
    assert tokenizer.decode(ours) == text


def test_readme_states_the_catalogue_coverage():
    """The README's count of catalogue entries whose template ftflow has / has verified is current."""
    from ftcore.catalog import load_catalog, template_coverage

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shown = readme.split("<!-- catalog-coverage:begin -->\n")[1].split("\n<!-- catalog-coverage:end -->")[0]
    assert shown == template_coverage(), "README's catalogue line is stale: paste template_coverage() into it"
    counts = [int(word.rstrip(",.:")) for word in shown.split() if word.rstrip(",.:").isdigit()]
    total, named, have, verified = counts
    assert total == len(load_catalog()) and total >= named >= have >= verified > 300
