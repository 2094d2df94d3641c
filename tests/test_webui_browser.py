"""The board in a real browser (Debian's headless Chromium driven by Playwright), one session through
every area: switch to Chinese and back, configure a short LoRA SFT of builtin:tiny-qwen2 on the demo
data, start it (a real `ft run` flow run), watch it finish with its loss curve, chat with the result,
evaluate it (the comparison table), export it (the model card); then a long job stopped at a checkpoint
(kept) and resumed to its end, a second version; in the Registry view promote both through the gate and
roll back (the champion alias moves 1 -> 2 -> 1). Screenshots of each area go to FTFLOW_TEST_ARTIFACTS
(default: the test's tmp dir); docs/img/webui-*.png are copies of two of them.

The jobs share one temporary Prefect server (ft's own, started here as `ft run` would start it): each
`ft run` would otherwise start and stop one of its own, the slowest part of a short job."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),  # three flow runs, an eval and an export, on a shared CPU
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (apt-get install chromium)"),
]
JOB, LONG = "webui-e2e", "webui-e2e-long"
# both versions pass, so that promote, promote and roll back each move the champion (the gate still runs)
LENIENT_GATE = "[{metric: eval_loss, direction: lower, min_improvement: -100}]"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FTFLOW_BOARD_DIR", str(tmp_path / "board"))
    from flows.local_server import prefect_api
    from webui.app import build, launch

    with prefect_api():  # PREFECT_API_URL for the jobs' `ft run`s, stopped at the end
        demo = build()
        port = _free_port()
        launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            demo.close()
            from webui import chat, jobs

            chat.unload()
            for name in (JOB, LONG):
                if jobs.stop(name):
                    jobs.wait(name, 60)


def _fill(page, path: str, value: str) -> None:
    box = page.locator(f"#f-{path.replace('.', '-')}").locator("input, textarea").first
    box.fill(value)
    box.press("Tab")


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _wait_text(page, elem_id: str, pattern: str, timeout_s: float = 60) -> str:
    """Wait until #elem_id's text matches the regex `pattern`; its text (a timeout shows the text)."""
    try:
        page.wait_for_function(
            "([id, p]) => new RegExp(p).test(document.getElementById(id)?.innerText || '')",
            arg=[elem_id, pattern],
            timeout=timeout_s * 1000,
        )
    except playwright.TimeoutError:
        shown = page.locator(f"#{elem_id}").inner_text()
        raise AssertionError(f"#{elem_id} never matched {pattern!r}: {shown}") from None
    return page.locator(f"#{elem_id}").inner_text()


def _champion(workdir: Path) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    return int(client.get_model_version_by_alias(JOB, "champion").version)


def test_board_covers_every_area(board: str, tmp_path: Path) -> None:
    from ftcore.train.checkpoints import last_complete_checkpoint

    shots = Path(os.environ.get("FTFLOW_TEST_ARTIFACTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    workdir = tmp_path / "job"
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name], clock = round(time.monotonic() - clock, 1), time.monotonic()

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(board)
        page.get_by_text("中文").click()  # Chinese without a reload: tabs, accordion titles, buttons
        page.get_by_role("tab", name="训练").wait_for()
        page.get_by_text("加速与显存").first.wait_for()
        page.screenshot(path=shots / "general-zh.png")
        _tab(page, "对话")
        page.get_by_role("button", name="加载模型").wait_for()
        page.screenshot(path=shots / "chat-zh.png")
        page.get_by_text("English").click()
        page.get_by_role("tab", name="Train").wait_for()
        _tab(page, "General")

        _fill(page, "name", JOB)
        _fill(page, "workdir", str(workdir))
        model = page.locator("#f-model-name_or_path input")
        model.fill("builtin:tiny-qwen2")
        model.press("Enter")
        page.screenshot(path=shots / "general.png")
        _tab(page, "Train")
        settings = {
            "data.dataset": "demo_alpaca",
            "data.eval_dataset": "demo_alpaca_eval",
            "data.cutoff_len": "128",
            "data.max_samples": "16",
            "train.max_steps": "8",
            "train.learning_rate": "0.005",
            "train.logging_steps": "2",
            "train.save_steps": "4",
        }
        for path, value in settings.items():
            _fill(page, path, value)
        _tab(page, "Evaluate")
        for path, value in {"eval.max_samples": "8", "eval.generation_samples": "2"}.items():
            _fill(page, path, value)
        _tab(page, "Registry")
        _fill(page, "registry.model_name", JOB)
        _fill(page, "registry.gate", LENIENT_GATE)
        lap("configure")

        # --- Train: a short job, watched to its end
        _tab(page, "Train")
        page.locator("#start").click()
        status = _wait_text(page, "job-status", "completed|failed|stopped", 900)
        assert "completed" in status and "step 8/8" in status, status
        page.locator("#loss-plot canvas, #loss-plot svg").first.wait_for()  # the curve is drawn
        page.screenshot(path=shots / "train.png", full_page=True)
        page.locator("#job-status").evaluate("node => node.scrollIntoView({block: 'start'})")
        page.screenshot(path=shots / "train-watch.png")
        lap("train")

        # --- Chat: the job's model, transformers backend, streamed
        _tab(page, "Chat")
        page.locator("#chat-source textarea, #chat-source input").first.fill(JOB)
        page.locator("#chat-load").click()
        _wait_text(page, "chat-loaded", "\\(transformers\\)", 300)
        page.locator("#chat-message textarea, #chat-message input").first.fill("Hello, who are you?")
        page.locator("#chat-send").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chatbot .message-row')].length >= 2"
            " && document.querySelector('#chatbot').innerText.replace('Hello, who are you?', '').trim()"
            ".length > 0",
            timeout=120_000,
        )
        page.screenshot(path=shots / "chat.png")
        page.locator("#chat-unload").click()
        _wait_text(page, "chat-loaded", "no model loaded")
        lap("chat")

        # --- Evaluate: `ft eval` of the finished job, its comparison table
        _tab(page, "Evaluate")
        page.locator("#run-eval").click()
        results = _wait_text(page, "eval-results", "eval_loss|no results", 600)
        assert "eval_loss" in results, results  # the comparison table, drawn as a table
        page.locator("#eval-results table").wait_for()
        page.screenshot(path=shots / "evaluate.png", full_page=True)
        lap("evaluate")

        # --- Export: merged into a folder, its model card shown
        _tab(page, "Export")
        _fill(page, "export.export_dir", str(tmp_path / "export"))
        page.locator("#run-export").click()
        card = _wait_text(page, "model-card", f"{tmp_path / 'export'}|no export folder", 600)
        assert str(tmp_path / "export") in card, card
        assert (tmp_path / "export" / "model.safetensors").is_file()
        page.screenshot(path=shots / "export.png")
        lap("export")

        # --- Stop a long job at a checkpoint (kept), resume it to its end: version 2
        _tab(page, "General")
        _fill(page, "name", LONG)
        _tab(page, "Train")
        for path, value in {
            "train.max_steps": "400",
            "train.save_steps": "10",
            "train.logging_steps": "10",
        }.items():
            _fill(page, path, value)
        earlier = set(workdir.glob("train-*"))
        page.locator("#start").click()
        deadline, checkpoint = time.monotonic() + 600, None
        while checkpoint is None and time.monotonic() < deadline:
            step_dir = next((d for d in workdir.glob("train-*") if d not in earlier), None)
            checkpoint = step_dir and last_complete_checkpoint(step_dir / "checkpoints")
            time.sleep(0.05)
        assert checkpoint is not None, "the long job saved no checkpoint"
        page.locator("#stop").click()
        status = _wait_text(page, "job-status", f"{LONG}: (stopped|completed|failed)", 120)
        assert "stopped" in status, status
        stopped_at = last_complete_checkpoint(step_dir / "checkpoints")
        assert stopped_at is not None  # the checkpoint is kept
        page.screenshot(path=shots / "train-stopped.png")
        page.locator("#resume").click()
        _wait_text(page, "job-status", f"{LONG}: running", 120)
        status = _wait_text(page, "job-status", f"{LONG}: (completed|failed|stopped)", 900)
        assert "completed" in status and "step 400/400" in status, status
        log = (tmp_path / "board" / LONG / "log.txt").read_text()
        resumed = re.search(r"resumed at step (\d+) of 400", log)
        assert resumed and int(resumed[1]) == int(stopped_at.name.rsplit("-", 1)[1]), log[-3000:]
        lap("stop-resume")

        # --- Registry: both versions; promote 1, promote 2, roll back to 1
        _tab(page, "Registry")
        page.locator("#registry-refresh").click()
        _wait_text(page, "registry-versions", "candidate")  # (cells are measured in hidden copies)
        version = page.locator("#registry-version input")
        for number in (1, 2):
            version.fill(str(number))
            version.press("Tab")
            page.locator("#registry-promote").click()
            pattern = f"Promotion of {JOB} version {number}: (passed|failed|refused)"
            decision = _wait_text(page, "registry-decision", pattern)
            assert f"version {number}: passed" in decision, decision
            assert _champion(workdir) == number
        page.screenshot(path=shots / "registry-promoted.png", full_page=True)
        page.locator("#registry-rollback").click()
        _wait_text(page, "registry-decision", "moved back from version 2 to version 1")
        assert _champion(workdir) == 1
        page.screenshot(path=shots / "registry.png", full_page=True)
        lap("registry")
        browser.close()
    print("timings (s):", timings)
