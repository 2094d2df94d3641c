"""The board in a real browser (Debian's headless Chromium driven by Playwright): switch to Chinese and
back, configure a short LoRA SFT of builtin:tiny-qwen2 on the demo data, start it (a real `ft run`
flow run), watch it finish with its loss curve, chat with the result, export it and find its version in
the Registry view. Screenshots of each area go to FTFLOW_TEST_ARTIFACTS (default: the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # a whole flow run, then export, on a shared CPU
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (apt-get install chromium)"),
]
JOB = "webui-e2e"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FTFLOW_BOARD_DIR", str(tmp_path / "board"))
    from webui.app import build, launch

    demo = build()
    port = _free_port()
    launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}"
    demo.close()
    from webui import chat, jobs

    chat.unload()
    jobs.stop(JOB)


def _fill(page, path: str, value: str) -> None:
    box = page.locator(f"#f-{path.replace('.', '-')}").locator("input, textarea").first
    box.fill(value)
    box.press("Tab")


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_board_trains_chats_exports_and_registers(board: str, tmp_path: Path) -> None:
    shots = Path(os.environ.get("FTFLOW_TEST_ARTIFACTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(board)
        page.get_by_text("中文").click()  # Chinese without a reload, then back
        page.get_by_role("tab", name="训练").wait_for()
        page.screenshot(path=shots / "general-zh.png")
        page.get_by_text("English").click()
        page.get_by_role("tab", name="Train").wait_for()

        _fill(page, "name", JOB)
        _fill(page, "workdir", str(tmp_path / "job"))
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
        page.locator("#f-eval-compare_base input").uncheck()  # the base's scores are not needed here
        _tab(page, "Registry")
        _fill(page, "registry.model_name", JOB)
        _tab(page, "Train")
        page.locator("#start").click()
        status = page.locator("#job-status")
        status.get_by_text("completed").wait_for(timeout=900_000)
        page.locator("#loss-plot canvas, #loss-plot svg").first.wait_for()  # the curve is drawn
        assert "step 8/8" in status.inner_text()
        page.screenshot(path=shots / "train.png", full_page=True)
        status.evaluate("node => node.scrollIntoView({block: 'start'})")
        page.screenshot(path=shots / "train-watch.png")

        _tab(page, "Chat")
        page.locator("#chat-source textarea, #chat-source input").first.fill(JOB)
        page.locator("#chat-load").click()
        page.locator("#chat-loaded").get_by_text("loaded").wait_for(timeout=300_000)
        page.locator("#chat-message textarea, #chat-message input").first.fill("Hello, who are you?")
        page.locator("#chat-send").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chatbot .message-row')].length >= 2"
            " && document.querySelector('#chatbot').innerText.replace('Hello, who are you?', '').trim()"
            ".length > 0",
            timeout=120_000,
        )
        page.screenshot(path=shots / "chat.png")

        _tab(page, "Export")
        _fill(page, "export.export_dir", str(tmp_path / "export"))
        page.locator("#run-export").click()
        page.locator("#model-card").get_by_text(str(tmp_path / "export")).wait_for(timeout=600_000)
        assert (tmp_path / "export" / "model.safetensors").is_file()
        page.screenshot(path=shots / "export.png")

        _tab(page, "Registry")
        page.locator("#registry-refresh").click()
        page.wait_for_function(  # the table's cells are measured in hidden copies: read its text
            "() => document.querySelector('#registry-versions').innerText.includes('candidate')"
        )
        page.get_by_role("button", name="Promote (through the gate)").click()  # ft promote's gate
        page.wait_for_function(
            "() => /(passed|failed|refused): /.test(document.querySelector('#registry-decision').innerText)"
        )
        page.screenshot(path=shots / "registry.png", full_page=True)
        browser.close()
