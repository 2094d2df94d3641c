"""Step outputs: atomic directories, manifests, fingerprints and cache keys."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import ftcore
from ftcore.artifacts import (
    MANIFEST,
    Artifact,
    atomic_dir,
    clean_stale_temps,
    compute_key,
    fingerprint_file,
    fingerprint_path,
    hash_json,
    is_present,
    output_fingerprint,
    read_manifest,
    write_manifest,
)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((".tmp-", ".old-")))


# --- atomic_dir ---


def test_atomic_dir_renames_into_place(tmp_path: Path) -> None:
    final = tmp_path / "out" / "model"
    with atomic_dir(final) as tmp:
        assert tmp.is_dir() and tmp.parent == final.parent and tmp != final
        assert tmp.name.startswith(".tmp-model-")
        assert not final.exists()  # nothing at the final place until the block completes
        (tmp / "weights.bin").write_text("w")
    assert (final / "weights.bin").read_text() == "w"
    assert not tmp.exists()
    assert _leftovers(final.parent) == []


def test_atomic_dir_replaces_previous_content(tmp_path: Path) -> None:
    final = _tree(tmp_path / "model", {"old.txt": "old", "sub/x": "x"})
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").read_text() == "old"  # still readable while the new one is written
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path) == []


def test_atomic_dir_error_leaves_previous_content_and_no_temp(tmp_path: Path) -> None:
    final = _tree(tmp_path / "model", {"old.txt": "old", "sub/x": "x"})
    before = fingerprint_path(final)
    with pytest.raises(RuntimeError, match="killed"), atomic_dir(final) as tmp:
        (tmp / "half.bin").write_text("half")
        raise RuntimeError("killed mid-way")
    assert fingerprint_path(final) == before
    assert (final / "old.txt").read_text() == "old"
    assert not (final / "half.bin").exists()
    assert _leftovers(tmp_path) == []


def test_atomic_dir_error_with_nothing_before(tmp_path: Path) -> None:
    final = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt), atomic_dir(final):
        raise KeyboardInterrupt  # BaseException too: Ctrl-C must not leave a temp dir either
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


# --- manifests ---


def test_read_manifest_missing_or_corrupt(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / "nowhere") is None
    assert read_manifest(tmp_path) is None
    manifest = tmp_path / MANIFEST
    for bad in ("", "{not json", "[]", '{"kind": "model"}', '{"kind": 1, "path": 2, "fingerprint": 3}'):
        manifest.write_text(bad)
        assert read_manifest(tmp_path) is None, bad
    manifest.write_bytes(b"\xff\xfe\x00garbage")
    assert read_manifest(tmp_path) is None


def test_write_manifest_roundtrip(tmp_path: Path) -> None:
    artifact = Artifact(
        kind="adapter",
        path=str(tmp_path),
        fingerprint="abc",
        metadata={"key": "k1", "base_model_ref": "builtin:tiny-qwen2", "metrics": {"loss": 1.5}, "n": [1, 2]},
    )
    write_manifest(tmp_path, artifact)
    assert read_manifest(tmp_path) == artifact
    assert read_manifest(str(tmp_path)) == artifact
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]  # its temp file is gone
    # overwriting replaces it whole
    newer = artifact.model_copy(update={"fingerprint": "def"})
    write_manifest(tmp_path, newer)
    assert read_manifest(tmp_path) == newer


def test_artifact_defaults() -> None:
    artifact = Artifact(kind="model", path="/x", fingerprint="f")
    assert artifact.metadata == {}
    assert Artifact.model_validate_json(artifact.model_dump_json()) == artifact


# --- fingerprints ---


def test_fingerprint_follows_content_not_manifest(tmp_path: Path) -> None:
    root = _tree(
        tmp_path / "a", {"config.json": "{}", "weights/part-1.bin": "1111", "weights/part-2.bin": "2"}
    )
    first = fingerprint_path(root)
    assert first == fingerprint_path(root)  # deterministic

    write_manifest(root, Artifact(kind="model", path=str(root), fingerprint=first))
    assert fingerprint_path(root) == first
    write_manifest(root, Artifact(kind="model", path=str(root), fingerprint="changed", metadata={"x": 1}))
    assert fingerprint_path(root) == first

    (root / "weights/part-2.bin").write_text("3")
    changed = fingerprint_path(root)
    assert changed != first
    (root / "weights/part-2.bin").write_text("2")
    assert fingerprint_path(root) == first  # content, not times


def test_fingerprint_sees_names_and_new_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a", {"x.txt": "same"})
    before = fingerprint_path(root)
    (root / "x.txt").rename(root / "y.txt")
    assert fingerprint_path(root) != before
    (root / "y.txt").rename(root / "x.txt")
    assert fingerprint_path(root) == before
    (root / "extra.txt").write_text("")
    assert fingerprint_path(root) != before


def test_fingerprint_same_content_same_hash_anywhere(tmp_path: Path) -> None:
    files = {"a.txt": "1", "d/b.txt": "2"}
    assert fingerprint_path(_tree(tmp_path / "one", files)) == fingerprint_path(
        _tree(tmp_path / "two", files)
    )


def test_fingerprint_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert fingerprint_path(path) == fingerprint_file(path)
    assert fingerprint_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_fingerprint_sees_a_change_anywhere_in_a_big_file(tmp_path: Path) -> None:
    # weights files are big: a change in the middle of one (not in its first or last MiB) must show
    path = tmp_path / "model.safetensors"
    size = 65 * 1024 * 1024
    with path.open("wb") as handle:
        handle.truncate(size)
    before, tree_before = fingerprint_file(path), fingerprint_path(tmp_path)
    with path.open("r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\x01")
    assert fingerprint_file(path) != before
    assert fingerprint_path(tmp_path) != tree_before


def test_output_fingerprint_follows_key_names_and_content(tmp_path: Path) -> None:
    root = _tree(tmp_path / "out", {"model/w.bin": "1234", "config.json": "{}"})
    first = output_fingerprint("key-1", root)
    assert first == output_fingerprint("key-1", root)
    assert first != output_fingerprint("key-2", root), "same bytes from other code or inputs differ"
    write_manifest(root, Artifact(kind="model", path=str(root), fingerprint=first))
    assert output_fingerprint("key-1", root) == first, "the manifest is not content"
    (root / "model/w.bin").write_text("1235")  # same size, other content
    assert output_fingerprint("key-1", root) != first
    (root / "model/w.bin").write_text("1234")
    (root / "model/w.bin").rename(root / "model/v.bin")
    assert output_fingerprint("key-1", root) != first


def test_is_present_requires_the_manifest_of_a_step_output(tmp_path: Path) -> None:
    out = _tree(tmp_path / "train", {"model/w.bin": "w"})
    trained = Artifact(
        kind="model",
        path=str(out / "model"),
        fingerprint=fingerprint_path(out / "model"),
        metadata={"key": "k"},
    )
    assert not is_present(trained), "model/ without the step's manifest is an unfinished training"
    write_manifest(out, trained)
    assert is_present(trained)
    write_manifest(out, trained.model_copy(update={"fingerprint": "other"}))
    assert not is_present(trained), "a different result now lives there"
    fetched = Artifact(kind="model", path=str(out / "model"), fingerprint="f", metadata={"source": "local"})
    assert is_present(fetched), "an input is present while its folder exists"
    assert not is_present(fetched.model_copy(update={"path": str(tmp_path / "gone")}))


# --- cache keys ---


def test_compute_key_changes_with_config_inputs_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    base = compute_key("train", {"lr": 1e-4, "rank": 8}, ["fp-model", "fp-data"])
    assert base == compute_key("train", {"rank": 8, "lr": 1e-4}, ["fp-model", "fp-data"])  # key order
    assert base != compute_key("train", {"lr": 2e-4, "rank": 8}, ["fp-model", "fp-data"])
    assert base != compute_key("train", {"lr": 1e-4, "rank": 8}, ["fp-model", "fp-data-2"])
    assert base != compute_key("train", {"lr": 1e-4, "rank": 8}, ["fp-data", "fp-model"])
    assert base != compute_key("evaluate", {"lr": 1e-4, "rank": 8}, ["fp-model", "fp-data"])
    assert base != compute_key("train", {"lr": 1e-4, "rank": 8}, ["fp-model", "fp-data"], extra="x")
    # A new ftflow version invalidates every cache. The version is an input read from
    # ftcore.__version__ at call time; setting it is how a new release looks to the key.
    monkeypatch.setattr(ftcore, "__version__", ftcore.__version__ + ".post1")
    assert base != compute_key("train", {"lr": 1e-4, "rank": 8}, ["fp-model", "fp-data"])


def test_compute_key_changes_with_the_step_version() -> None:
    v1 = compute_key("train", {"lr": 1e-4}, ["fp"], version=1)
    assert v1 == compute_key("train", {"lr": 1e-4}, ["fp"], version=1)
    assert v1 != compute_key("train", {"lr": 1e-4}, ["fp"], version=2)


def test_hash_json_is_stable() -> None:
    assert hash_json({"a": 1, "b": [1, 2]}) == hash_json({"b": [1, 2], "a": 1})
    assert hash_json({"a": 1}) != hash_json({"a": 2})
    assert hash_json({"p": Path("/x")}) == hash_json({"p": "/x"})  # default=str
    assert len(hash_json(None)) == 64


# --- stale temps ---


def test_clean_stale_temps(tmp_path: Path) -> None:
    _tree(tmp_path, {".tmp-model-1234abcd/w.bin": "w", ".old-model-deadbeef/w.bin": "w", "model/w.bin": "w"})
    (tmp_path / ".tmp-note").write_text("a file, not a temp dir")
    (tmp_path / ".hidden").mkdir()
    clean_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".tmp-note", "model"]
    assert (tmp_path / "model/w.bin").read_text() == "w"
    clean_stale_temps(tmp_path / "missing")  # no error


def test_clean_stale_temps_spares_young_temp_dirs(tmp_path: Path) -> None:
    _tree(tmp_path, {".tmp-old-1/w": "w", ".tmp-young-2/w": "w"})
    an_hour_ago = time.time() - 3600
    os.utime(tmp_path / ".tmp-old-1", (an_hour_ago, an_hour_ago))
    removed = clean_stale_temps(tmp_path, older_than_s=600)
    assert [p.name for p in removed] == [".tmp-old-1"]
    assert (tmp_path / ".tmp-young-2").is_dir()
