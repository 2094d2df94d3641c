"""The model catalogue: its data, `ft models` filters, and catalogue names resolving to hub references
(Hugging Face or ModelScope by model.hub / USE_MODELSCOPE_HUB) with fast, clear offline errors.

No test touches the network: a model "downloaded earlier" is a Hugging Face cache laid out by hand
(tests/test_hub.py's helper), an unreachable hub is HF_HUB_OFFLINE.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flows.cli import main
from ftcore.catalog import all_tags, find_model, list_models, load_catalog
from ftcore.config import load_config
from ftcore.data.template import list_templates
from ftcore.errors import FtflowError, ModelNotAvailableError
from ftcore.hub import expand_ref, resolve_model
from tests.test_hub import _populate_hf_cache

# The families issue 9 names, each with at least one catalogue entry (family prefix).
ISSUE_FAMILIES = [
    "Qwen1.5", "Qwen2", "Qwen2.5", "Qwen3", "DeepSeek-LLM", "DeepSeek-V2", "DeepSeek-V3", "DeepSeek-R1",
    "Llama-2", "Llama-3", "Llama-3.1", "Llama-3.2", "Llama-3.3", "Gemma", "Gemma-2", "Gemma-3",
    "Mistral", "Mixtral", "Yi", "Baichuan2", "ChatGLM3", "GLM-4", "Phi-2", "Phi-3", "Phi-3.5", "Phi-4",
    "InternLM",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_modelscope_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USE_MODELSCOPE_HUB", raising=False)


def test_catalogue_is_large_and_complete() -> None:
    catalog = load_catalog()
    assert len(catalog) >= 200
    for name, entry in catalog.items():
        assert entry.family and entry.tags, name
        assert entry.hf or entry.ms, name
        for repo in filter(None, (entry.hf, entry.ms)):
            assert repo.count("/") == 1 and " " not in repo, (name, repo)
    for family in ISSUE_FAMILIES:
        assert list_models(family=family), family
    assert {
        "Base",
        "Chat",
        "Instruct",
        "Distill",
        "Math",
        "Coder",
        "VL",
        "MoE",
        "Int4",
        "Int8",
        "AWQ",
        "GPTQ",
    } <= set(all_tags())
    entry = find_model("Qwen2.5-7B-Instruct")
    assert (entry.family, entry.template, entry.hf, entry.size) == (
        "Qwen2.5",
        "qwen",
        "Qwen/Qwen2.5-7B-Instruct",
        "7B",
    )
    assert entry.tags == ["Instruct"]
    assert find_model("qwen2.5-7b-instruct") == entry  # case-insensitive
    assert set(find_model("Qwen1.5-MoE-A2.7B-Chat").tags) == {"Chat", "MoE"}
    assert set(find_model("Qwen2.5-0.5B-Instruct-GPTQ-Int4").tags) == {"Instruct", "GPTQ", "Int4"}


def test_catalogue_templates_not_yet_in_ftflow() -> None:
    """Catalogue templates are LLaMA-Factory's names; issue 9 §2 adds the missing ones. This lists
    them (it does not fail on them) and checks the families ftflow has are wired to its templates."""
    ours = set(list_templates())
    used = {e.template for e in load_catalog().values() if e.template}
    missing = sorted(used - ours)
    print(f"{len(used & ours)} of {len(used)} catalogue templates are in templates.yaml; missing: {missing}")
    assert {"qwen", "qwen3", "llama3"} <= used & ours


def test_listing_filters() -> None:
    qwen25 = list_models(family="qwen2.5")
    assert qwen25 and all(m.family == "Qwen2.5" for m in qwen25)
    assert {m.family for m in list_models(family="qwen2")} == {"Qwen2", "Qwen2.5"}  # family prefix
    awq = list_models(family="qwen2.5", tag="awq")
    assert awq and all("AWQ" in m.tags and m.family == "Qwen2.5" for m in awq)
    assert len(awq) < len(qwen25)
    coder = list_models(tag="Coder", search="deepseek")
    assert coder and all("Coder" in m.tags and "deepseek" in (m.name + (m.hf or "")).lower() for m in coder)
    by_repo = list_models(search="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert [m.name for m in by_repo] == ["DeepSeek-R1-7B-Distill"]
    assert list_models(family="no-such-family") == []


def test_ft_models_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["models", "--family", "qwen2.5", "--tag", "Instruct", "--search", "0.5b"]) == 0
    out = capsys.readouterr().out
    assert "Qwen2.5-0.5B-Instruct " in out and "Qwen/Qwen2.5-0.5B-Instruct" in out
    assert "Qwen2.5-7B-Instruct" not in out and "Qwen2.5-0.5B " not in out
    assert main(["models", "--search", "Mixtral-8x7B-v0.1-Instruct", "--hub", "modelscope"]) == 0
    assert "AI-ModelScope/Mixtral-8x7B-Instruct-v0.1" in capsys.readouterr().out
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    assert main(["models", "--search", "Mixtral-8x7B-v0.1-Instruct"]) == 0
    assert "AI-ModelScope/Mixtral-8x7B-Instruct-v0.1" in capsys.readouterr().out
    assert main(["models", "--tag", "no-such-tag"]) == 1
    assert "no catalogue model matches" in capsys.readouterr().out


def test_catalogue_name_resolves_to_hub_refs(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config({"model": {"name_or_path": "Qwen2.5-0.5B-Instruct"}})
    assert cfg.model.name_or_path == "hf:Qwen/Qwen2.5-0.5B-Instruct"
    assert cfg.data.template == "qwen"  # the catalogue's template is the default
    cfg = load_config({"model": {"name_or_path": "Qwen2.5-0.5B-Instruct", "hub": "modelscope"}})
    assert cfg.model.name_or_path == "ms:Qwen/Qwen2.5-0.5B-Instruct"
    # an explicit template wins; loading the dumped config again changes nothing
    cfg = load_config({"model": {"name_or_path": "Llama-3-8B-Instruct"}, "data": {"template": "chatml"}})
    assert (cfg.model.name_or_path, cfg.data.template) == ("hf:meta-llama/Meta-Llama-3-8B-Instruct", "chatml")
    assert load_config(cfg.model_dump()).model.name_or_path == cfg.model.name_or_path
    # LLaMA-Factory's flat keys take catalogue names too
    flat = load_config({"model_name_or_path": "Qwen3-0.6B-Base", "stage": "sft", "dataset": "identity"})
    assert flat.model.name_or_path == "hf:Qwen/Qwen3-0.6B-Base"

    # USE_MODELSCOPE_HUB=1 as in LLaMA-Factory; model.hub still wins over it
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    assert expand_ref("Mixtral-8x7B-v0.1") == "ms:AI-ModelScope/Mixtral-8x7B-v0.1"
    assert load_config({"model": {"name_or_path": "Qwen2.5-0.5B-Instruct"}}).model.name_or_path == (
        "ms:Qwen/Qwen2.5-0.5B-Instruct"
    )
    assert expand_ref("Mixtral-8x7B-v0.1", "huggingface") == "hf:mistralai/Mixtral-8x7B-v0.1"
    # a model not published on the chosen hub says which hub has it
    with pytest.raises(ModelNotAvailableError, match=r"model\.hub: huggingface"):
        expand_ref("Aya-23-8B-Chat")
    # other references are left alone
    for ref in ("hf:org/x", "ms:org/x", "builtin:tiny-qwen2", "./some/dir"):
        assert expand_ref(ref) == ref


def test_local_directory_wins_over_catalogue_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen2: Path
) -> None:
    (tmp_path / "Qwen2.5-0.5B-Instruct").symlink_to(tiny_qwen2)
    monkeypatch.chdir(tmp_path)
    assert expand_ref("Qwen2.5-0.5B-Instruct") == "Qwen2.5-0.5B-Instruct"
    assert resolve_model("Qwen2.5-0.5B-Instruct").source == "local"


def test_catalogue_name_from_the_cache_and_offline_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen2: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as err:
        resolve_model("Qwen2.5-0.5B-Instruct", cache_dir=str(tmp_path / "empty"))
    assert time.perf_counter() - start < 2
    assert "hf download Qwen/Qwen2.5-0.5B-Instruct" in str(err.value)
    # the same name resolves from a cache holding the repo (stand-in for an earlier download)
    cache = tmp_path / "hub"
    _populate_hf_cache(cache, "Qwen/Qwen2.5-0.5B-Instruct", tiny_qwen2)
    resolved = resolve_model("Qwen2.5-0.5B-Instruct", cache_dir=str(cache))
    assert resolved.source == "hf" and (resolved.path / "config.json").is_file()


def test_unknown_name_suggests_close_catalogue_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(FtflowError) as err:
        resolve_model("Qwen2.5-7B-Instuct")
    assert time.perf_counter() - start < 2
    message = str(err.value)
    assert "did you mean" in message and "Qwen2.5-7B-Instruct" in message
