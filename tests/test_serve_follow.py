"""Blue/green serving of a moving champion, for real: a sqlite MLflow registry with two tiny-llama
versions and a broken third, real backend server processes behind the front (reverse proxy), clients
that keep asking while the champion moves."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ftcore.config.sections import ServeConfig
from ftcore.errors import ConfigError

KEY = "front-key-456"
NAME = "follow-model"


def _register(client: Any, experiment: str, folder: Path, key: str, full: bool = True) -> int:
    from mlflow.entities import LoggedModelStatus

    from ftcore import registry

    if full:
        source = registry.log_model(client, experiment, None, folder, key)[1]
    else:  # uploaded as a plain folder, as it is (a full model would be loaded on the way)
        logged = client.create_logged_model(experiment, name=key)
        client.log_model_artifacts(logged.model_id, str(folder))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        source = logged.artifact_location
    return registry.register_model(client, NAME, None, source, {}, key=key)["version"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> dict[str, Any]:
    """Versions 1 and 2: tiny-llama (MLflow transformers models); 3: config.json over broken weights.
    (Registered without model_id: MLflow resolves that link through the process-wide tracking URI.)"""
    from ftcore import tracking

    root = tmp_path_factory.mktemp("follow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = tracking.get_client(uri)
    experiment = tracking.ensure_experiment(client, "follow", root / "artifacts")
    broken = root / "broken"
    shutil.copytree(tiny_llama, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    versions = [_register(client, experiment, tiny_llama, f"v{i}") for i in (1, 2)]
    versions.append(_register(client, experiment, broken, "v3", full=False))
    assert versions == [1, 2, 3]
    return {"uri": uri, "client": client, "root": root}


@pytest.fixture(scope="module")
def follower(store: dict[str, Any]):
    """The front on a free port (key required) and a follower of models:/NAME@champion behind it."""
    from ftcore.serve.bluegreen import Follower, FollowSpec, start_front

    serve = ServeConfig(api_key=KEY, backend="transformers")
    spec = FollowSpec(store["uri"], NAME, "champion", serve, store["root"] / "logs")
    front, server, url = start_front(spec, port=0)
    follower = Follower(spec, front, drain_s=30)
    try:
        yield {"follower": follower, "url": url}
    finally:
        follower.close()
        server.stop()


def _move(store: dict[str, Any], version: int) -> None:
    from ftcore import registry

    registry.move_champion(store["client"], NAME, version, "promote", "test")


def _ask(url: str, stream: bool = False, key: str | None = KEY) -> tuple[int, str | None, str]:
    """One chat request through the front: (status, version header, answer text or error body)."""
    import httpx

    body = {"model": NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": stream}
    body["temperature"] = 0
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=120)
    if response.status_code != 200:
        return response.status_code, None, response.text
    version = response.headers.get("x-ftflow-model-version")
    if not stream:
        return 200, version, response.json()["choices"][0]["message"]["content"]
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", response.text
    parts = [json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e != "[DONE]"]
    return 200, version, "".join(p for p in parts)


def _ensure_serving(store: dict[str, Any], follower: Any, version: int) -> None:
    if follower.serving is None or follower.serving.version != version:
        _move(store, version)
        assert follower.check()["result"] == "serving"


def test_front_serves_the_champion_and_wants_the_key(store: dict[str, Any], follower: dict[str, Any]) -> None:
    import httpx

    _ensure_serving(store, follower["follower"], 1)
    url = follower["url"]
    models = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == NAME
    assert models.headers["x-ftflow-model-version"] == "1"
    assert _ask(url, key=None)[0] == 401 and _ask(url, key="wrong")[0] == 401
    health = httpx.get(url.removesuffix("/v1") + "/health", timeout=60)  # open, like the backend's
    assert health.status_code == 200 and health.json() == {"status": "ok", "model": NAME, "version": "1"}
    assert _ask(url, stream=True)[:2] == (200, "1")
    assert follower["follower"].check() is None  # the alias did not move: nothing to do


def test_champion_moves_and_clients_see_no_error(store: dict[str, Any], follower: dict[str, Any]) -> None:
    """While the new version starts, a client loop (plain and streamed) keeps getting answers; they
    come from the old version until the switch and from the new one after; the old server is stopped."""
    fol = follower["follower"]
    _ensure_serving(store, fol, 1)
    old = fol.serving
    seen: list[tuple[int, str | None, str]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def client_loop() -> None:
        while not done.is_set():
            try:
                seen.append(_ask(follower["url"], stream=len(seen) % 2 == 1))
            except BaseException as exc:  # a dropped connection is what this test is about
                errors.append(exc)

    thread = threading.Thread(target=client_loop)
    thread.start()
    try:
        _move(store, 2)
        event = fol.check()
        switched = len(seen)
        deadline = time.monotonic() + 120
        while len(seen) < switched + 4 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        done.set()
        thread.join(timeout=120)
    assert event["result"] == "serving" and event["previous"] == 1 and event["version"] == 2
    assert not errors, errors
    assert all(status == 200 for status, _, _ in seen), [s for s in seen if s[0] != 200]
    versions = [v for _, v, _ in seen]
    assert versions[0] == "1" and versions[-1] == "2"
    first_new = versions.index("2")
    assert set(versions[first_new:]) == {"2"}  # once switched, never back
    assert len(seen) >= 6
    assert not old.server.alive()  # drained, then stopped
    assert len({text for _, _, text in seen}) == 1  # same weights, greedy: streamed or not, one answer


def test_broken_version_keeps_the_old_one_serving(store: dict[str, Any], follower: dict[str, Any]) -> None:
    from ftcore import registry
    from ftcore.serve.bluegreen import SERVE_ERROR_TAG

    fol = follower["follower"]
    if fol.serving is None:
        _ensure_serving(store, fol, 2)
    serving = fol.serving.version
    _move(store, 3)
    event = fol.check()
    assert event["result"] == "failed" and event["version"] == 3
    assert "ft serve exited" in event["reason"]  # the server process exited while loading
    assert fol.serving.version == serving and fol.serving.server.alive()
    assert _ask(follower["url"])[:2] == (200, str(serving))
    tags = store["client"].get_model_version(NAME, "3").tags
    assert "ft serve exited" in tags[SERVE_ERROR_TAG]
    assert fol.check() is None  # not retried while the alias stays on it
    assert int(registry.get_version_by_alias(store["client"], NAME, "champion").version) == 3
    fol.serving.server.process.kill()  # the serving backend dies: the next check starts it again
    fol.serving.server.process.wait()
    assert _ask(follower["url"])[0] == 502
    event = fol.check()
    assert (event["result"], event["version"]) == ("serving", serving)
    assert _ask(follower["url"])[:2] == (200, str(serving))


def test_front_beyond_localhost_needs_a_key_and_targets_are_checked(tmp_path: Path) -> None:
    from flows.cli import main
    from ftcore.serve.bluegreen import follow_spec
    from ftcore.serve.proxy import Front, FrontServer

    with pytest.raises(ConfigError, match="needs an API key"):
        FrontServer(Front(None), "0.0.0.0", 0, None)
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        follow_spec("some-model")
    with pytest.raises(ConfigError, match="expected a config file"):
        follow_spec(str(tmp_path), tracking_uri="sqlite:///x.db")
    spec = follow_spec("models:/m@blue", tracking_uri="sqlite:///x.db")
    assert (spec.model_name, spec.alias) == ("m", "blue")
    assert main(["serve", "m", "--follow", "--lora", f"a={tmp_path}"]) == 2


@pytest.mark.slow
def test_ft_serve_follow_runs_the_serve_flow(store: dict[str, Any], tmp_path: Path) -> None:
    """`ft serve models:/NAME@champion --follow`: the Prefect flow (temporary server) behind a fixed
    port; v1 first, champion -> v2 is a `restart` task run; SIGTERM stops the front and both backends."""
    import os
    import re
    import signal
    import subprocess
    import sys

    import httpx

    from tests.helpers import REPO, free_port, stop_group

    _move(store, 1)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "FTFLOW_API_KEY": KEY}
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "serve",
        f"models:/{NAME}@champion",
        "--follow",
        "--poll-s",
        "0.5",
    ]
    cmd += ["--tracking-uri", store["uri"], "--port", str(port), "--backend", "transformers"]
    out, err = tmp_path / "ft.out", tmp_path / "ft.err"
    done = r"Task run 'restart-\S+ - Finished in state Completed"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while "ready: " not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.5)
        assert f"ready: {url} serving version 1 of {NAME}" in out.read_text()
        assert _ask(url)[:2] == (200, "1")
        _move(store, 2)
        seen = []
        while not seen or seen[-1][1] != "2":
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            seen.append(_ask(url))
        assert all(status == 200 for status, _, _ in seen), seen
        while len(re.findall(done, err.read_text())) < 2:  # the restart task drains and stops v1
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            stop_group(proc)
    log = out.read_text() + err.read_text()
    assert len(re.findall(done, log)) == 2 and "stopped version 1" in log, log  # a task run per move
    ports = {int(p) for p in re.findall(rf"started {NAME} version \d+ on port (\d+)", log)}
    assert len(ports) == 2 and "stopped: the front and the model servers are down" in log
    for backend_port in [*ports, port]:  # nothing listens any more: no server left behind
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{backend_port}/health", timeout=5)
