"""Side virtualenvs: install into a temp folder then place, run standalone scripts, clear errors.

A small torch-free environment stands in for vLLM / the quantizers here (their real installs are
exercised by the serving and export tests); it goes through the same install and run code.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from ftcore import venvs
from ftcore.errors import ConfigError


@pytest.fixture
def tiny_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FTFLOW_VENVS", str(tmp_path / "venvs"))
    spec = venvs.SideEnv(
        name="tiny", purpose="a test", requirements=(), probe="json", needs_torch=False, remove=()
    )
    monkeypatch.setitem(venvs.SIDE_ENVS, "tiny", spec)
    return spec


def test_missing_env_says_how_to_install(tiny_env):
    with pytest.raises(venvs.SideEnvError, match="ft env install tiny"):
        venvs.require("tiny")
    with pytest.raises(ConfigError, match="unknown side environment 'nope'"):
        venvs.require("nope")


@pytest.mark.slow
def test_install_places_a_working_env_and_runs_scripts(tiny_env, tmp_path):
    python = venvs.install("tiny")
    root = tmp_path / "venvs"
    assert python == root / "tiny" / "bin" / "python"
    # built elsewhere and moved: no temporary folder left, and pip works from the final path
    assert sorted(p.name for p in root.iterdir()) == ["tiny", "tiny-install.log"]
    pip = subprocess.run([str(root / "tiny" / "bin" / "pip"), "--version"], capture_output=True, text=True)
    assert pip.returncode == 0 and str(root / "tiny") in pip.stdout
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('prefix', sys.prefix)\nsys.exit(int(sys.argv[1]))\n")
    venvs.run_script("tiny", script, ["0"], tmp_path / "ok.log")
    assert f"prefix {root / 'tiny'}" in (tmp_path / "ok.log").read_text()
    with pytest.raises(venvs.SideEnvError, match="exit 3"):
        venvs.run_script("tiny", script, ["3"], tmp_path / "bad.log")


def test_override_interpreter(tiny_env, monkeypatch):
    monkeypatch.setenv("FTFLOW_TINY_PYTHON", sys.executable)
    assert venvs.require("tiny") == venvs.python_path("tiny")


def test_a_folder_that_is_not_a_virtualenv_is_never_replaced(tiny_env, tmp_path):
    mine = tmp_path / "venvs" / "tiny"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(venvs.SideEnvError, match="not a virtualenv"):
        venvs.install("tiny", force=True)
    assert (mine / "notes.txt").read_text() == "mine"
