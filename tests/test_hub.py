"""Model references -> local directories: built-ins, local paths, the Hugging Face and ModelScope
caches, and fast, actionable failures when a hub cannot be reached.

No test here touches the network. Hub downloads cannot happen on this machine, so "the model was
downloaded earlier" is stood in for by a Hugging Face cache built by hand in its real on-disk layout,
and "the hub is unreachable" by an endpoint on a closed local port.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from ftcore.builtin import BUILTIN_MARKER, BUILTIN_VERSION, BUILTINS, builtin_dir, builtin_problem
from ftcore.errors import ModelNotAvailableError
from ftcore.hub import ResolvedModel, builtin_template, parse_ref, resolve_model

CLOSED_ENDPOINT = "http://127.0.0.1:9"  # discard port: nothing listens, the connect is refused at once
SHA = "0123456789abcdef0123456789abcdef01234567"


# --- built-in ---


def test_builtin_resolves_and_is_not_rebuilt(tiny_qwen2: Path) -> None:
    first = resolve_model("builtin:tiny-qwen2")
    assert first == ResolvedModel("builtin:tiny-qwen2", "builtin", tiny_qwen2, f"builtin-v{BUILTIN_VERSION}")
    assert first.path == builtin_dir("tiny-qwen2")
    assert (first.path / "config.json").is_file()
    assert (first.path / "tokenizer.json").is_file()
    marker = first.path / BUILTIN_MARKER
    stamps = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}

    second = resolve_model("builtin:tiny-qwen2")
    assert second.path == first.path
    assert marker.stat().st_mtime_ns == stamps[BUILTIN_MARKER]
    assert {p.name: p.stat().st_mtime_ns for p in second.path.iterdir()} == stamps
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert builtin_template(first.path) == "qwen2"  # Qwen2-Instruct's template, as its chat_template.jinja


def test_builtin_llama(tiny_llama: Path) -> None:
    resolved = resolve_model("builtin:tiny-llama")
    assert resolved.path == tiny_llama
    assert builtin_template(resolved.path) == "llama3"


def test_unknown_builtin_lists_the_available_ones() -> None:
    with pytest.raises(ModelNotAvailableError) as info:
        resolve_model("builtin:tiny-gpt5")
    message = str(info.value)
    assert "builtin:tiny-gpt5" in message
    for name in BUILTINS:
        assert name in message


# --- local paths ---


def test_local_model_dir(tiny_qwen2: Path) -> None:
    resolved = resolve_model(str(tiny_qwen2))
    assert (resolved.source, resolved.path, resolved.revision) == ("local", tiny_qwen2.resolve(), None)


def test_local_dir_without_config_json_names_it(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "README.md").write_text("hello")
    with pytest.raises(ModelNotAvailableError) as info:
        resolve_model(str(empty))
    assert str(empty) in str(info.value)
    assert "config.json" in str(info.value)
    with pytest.raises(ModelNotAvailableError, match="does-not-exist"):
        resolve_model(str(tmp_path / "does-not-exist"))


def _model_copy(tmp_path: Path, source: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(source, target)
    return target


def test_corrupt_config_json_is_named(tmp_path: Path, tiny_qwen2: Path) -> None:
    model = _model_copy(tmp_path, tiny_qwen2)
    (model / "config.json").write_text('{"model_type": "qwen2", "hidden_size": 12')
    with pytest.raises(ModelNotAvailableError) as info:
        resolve_model(str(model))
    assert f"{model / 'config.json'} is not valid JSON" in str(info.value)


def test_truncated_safetensors_is_named(tmp_path: Path, tiny_qwen2: Path) -> None:
    model = _model_copy(tmp_path, tiny_qwen2)
    weights = model / "model.safetensors"
    whole = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(whole - 1000)
    with pytest.raises(ModelNotAvailableError) as info:
        resolve_model(str(model))
    assert f"{weights} is truncated ({whole - 1000} bytes of {whole})" in str(info.value)
    with weights.open("r+b") as handle:
        handle.truncate(20)  # not even the header is whole
    with pytest.raises(ModelNotAvailableError, match=r"model\.safetensors is truncated"):
        resolve_model(str(model))


def test_missing_shard_is_named(tmp_path: Path, tiny_qwen2: Path) -> None:
    model = _model_copy(tmp_path, tiny_qwen2)
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelNotAvailableError, match=r"model-00002-of-00002\.safetensors"):
        resolve_model(str(model))


def test_truncated_builtin_in_the_cache_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen2: Path
) -> None:
    """An interrupted copy of the ftflow cache: detected from the sizes the marker records, rebuilt."""
    monkeypatch.setenv("FTFLOW_HOME", str(tmp_path / "home"))
    target = builtin_dir("tiny-qwen2")
    shutil.copytree(tiny_qwen2, target)
    whole = (tiny_qwen2 / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(whole[: len(whole) // 2])

    assert resolve_model("builtin:tiny-qwen2").path == target
    assert (target / "model.safetensors").read_bytes() == whole  # built again, identically
    assert builtin_problem(target) is None


def test_builtin_template_of_a_non_builtin(tmp_path: Path) -> None:
    assert builtin_template(tmp_path) is None


# --- parse_ref ---


@pytest.mark.parametrize(
    ("ref", "revision", "expected"),
    [
        ("hf:Qwen/Qwen2.5-0.5B", None, ("hf", "Qwen/Qwen2.5-0.5B", None)),
        ("hf:Qwen/Qwen2.5-0.5B@v1.0", None, ("hf", "Qwen/Qwen2.5-0.5B", "v1.0")),
        ("hf:Qwen/Qwen2.5-0.5B@v1.0", "abc123", ("hf", "Qwen/Qwen2.5-0.5B", "abc123")),
        ("hf:Qwen/Qwen2.5-0.5B", "main", ("hf", "Qwen/Qwen2.5-0.5B", "main")),
        ("ms:qwen/Qwen2.5-0.5B@master", None, ("ms", "qwen/Qwen2.5-0.5B", "master")),
        ("ms:qwen/Qwen2.5-0.5B@master", "v2", ("ms", "qwen/Qwen2.5-0.5B", "v2")),
        ("builtin:tiny-qwen2", None, ("builtin", "tiny-qwen2", None)),
        ("/models/llama", None, ("local", "/models/llama", None)),
        ("./models/x@y", None, ("local", "./models/x@y", None)),
    ],
)
def test_parse_ref(ref: str, revision: str | None, expected: tuple[str, str, str | None]) -> None:
    assert parse_ref(ref, revision) == expected


@pytest.mark.parametrize("ref", ["hf:", "ms:", "builtin:", "hf:@main"])
def test_parse_ref_without_a_name(ref: str) -> None:
    with pytest.raises(ModelNotAvailableError, match="names no model"):
        parse_ref(ref)


# --- Hugging Face: not cached, offline or unreachable ---


def _timed_failure(ref: str, **kwargs: str) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as info:
        resolve_model(ref, **kwargs)
    return str(info.value), time.perf_counter() - start


def test_hf_not_cached_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub  # noqa: F401  (import time is not what is measured)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, seconds = _timed_failure("hf:ftflow-test/not-cached", cache_dir=str(tmp_path))
    assert seconds < 2
    assert "hf:ftflow-test/not-cached" in message
    assert "hf download ftflow-test/not-cached" in message
    assert "HF_HUB_OFFLINE" in message

    message, _ = _timed_failure("hf:ftflow-test/not-cached@v1", cache_dir=str(tmp_path))
    assert "hf download ftflow-test/not-cached --revision v1" in message


def test_hf_not_cached_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub  # noqa: F401

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_ENDPOINT)
    message, seconds = _timed_failure("hf:ftflow-test/not-cached", cache_dir=str(tmp_path))
    assert seconds < 5
    assert "hf:ftflow-test/not-cached" in message
    assert CLOSED_ENDPOINT in message and "unreachable" in message
    assert "hf download ftflow-test/not-cached" in message


# --- Hugging Face: a pre-populated cache ---


def _populate_hf_cache(cache: Path, repo: str, model_dir: Path, sha: str = SHA) -> Path:
    """Lay `model_dir` out as `hf download repo` would have left it in the hub cache.

    This stands in for a download that cannot happen here. The layout is huggingface_hub's own:
    models--org--name/{refs/main, blobs/<hash>, snapshots/<sha>/<file> -> ../../blobs/<hash>}.
    """
    storage = cache / ("models--" + repo.replace("/", "--"))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(sha)
    blobs = storage / "blobs"
    blobs.mkdir()
    snapshot = storage / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for file in sorted(model_dir.iterdir()):
        if not file.is_file():
            continue
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blobs / digest)
        (snapshot / file.name).symlink_to(os.path.relpath(blobs / digest, snapshot))
    return snapshot


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "online-unreachable"])
def test_hf_prepopulated_cache_resolves(
    offline: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen2: Path
) -> None:
    cache = tmp_path / "hub"
    snapshot = _populate_hf_cache(cache, "ftflow-test/tiny-qwen2", tiny_qwen2)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", CLOSED_ENDPOINT)  # the cache must be enough: no network
    start = time.perf_counter()
    resolved = resolve_model("hf:ftflow-test/tiny-qwen2", cache_dir=str(cache))
    assert time.perf_counter() - start < 2
    assert resolved.source == "hf"
    assert resolved.revision == SHA
    assert resolved.path == snapshot.resolve()
    assert (resolved.path / "config.json").is_file()
    assert (resolved.path / "model.safetensors").read_bytes() == (
        tiny_qwen2 / "model.safetensors"
    ).read_bytes()

    # pinned to the commit, and to the branch by name
    assert resolve_model(f"hf:ftflow-test/tiny-qwen2@{SHA}", cache_dir=str(cache)).path == resolved.path
    assert resolve_model("hf:ftflow-test/tiny-qwen2", "main", cache_dir=str(cache)).revision == SHA
    # a revision that is not in the cache fails, naming it
    message, seconds = _timed_failure("hf:ftflow-test/tiny-qwen2@v9", cache_dir=str(cache))
    assert seconds < 5
    assert "hf:ftflow-test/tiny-qwen2@v9" in message and "--revision v9" in message


def test_hf_cache_loads_with_transformers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen2: Path
) -> None:
    """What the resolver returns is a directory transformers can load (symlinked blobs and all)."""
    from transformers import AutoConfig, AutoTokenizer

    cache = tmp_path / "hub"
    _populate_hf_cache(cache, "ftflow-test/tiny-qwen2", tiny_qwen2)
    resolved = resolve_model("hf:ftflow-test/tiny-qwen2", cache_dir=str(cache))
    assert AutoConfig.from_pretrained(resolved.path).model_type == "qwen2"
    assert AutoTokenizer.from_pretrained(resolved.path).eos_token == "<|im_end|>"


def test_hf_default_cache_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen2: Path) -> None:
    """Without model.cache_dir the Hugging Face default cache (HF_HUB_CACHE) is searched.

    huggingface_hub reads HF_HUB_CACHE once, at import; setting its constant is what the variable does
    for a process started with it (this patches the third-party library's setting, not ftflow code).
    """
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    _populate_hf_cache(cache, "ftflow-test/tiny-qwen2", tiny_qwen2)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert resolve_model("hf:ftflow-test/tiny-qwen2").revision == SHA


# --- ModelScope ---


def test_ms_not_cached_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Importing modelscope takes ~2-3 s on this machine (once per process); the cache lookup with
    # local_files_only itself is milliseconds. Import first so the timing measures ftflow's path.
    pytest.importorskip("modelscope")
    import modelscope  # noqa: F401

    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, seconds = _timed_failure("ms:ftflow-test/not-cached")
    assert seconds < 2
    assert "ms:ftflow-test/not-cached" in message
    assert "modelscope download --model ftflow-test/not-cached" in message

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MODELSCOPE_OFFLINE", raising=False)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", CLOSED_ENDPOINT)
    message, seconds = _timed_failure("ms:ftflow-test/not-cached@v1")
    assert seconds < 5
    assert "ms:ftflow-test/not-cached@v1" in message and CLOSED_ENDPOINT in message
