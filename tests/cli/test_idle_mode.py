"""`meshp2p` with no command, as a new user types it: it says what to run and serves the read-only console until
Ctrl-C; with a node running in the same MESHP2P_HOME it points at that node's console instead. Real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from helpers.browser import chromium_path
from helpers.processes import REPO, clean_environ, free_port, wait_for
from playwright.sync_api import expect, sync_playwright

COMMAND_TIMEOUT_S = 60


def idle_env(home: Path) -> dict[str, str]:
    return {**clean_environ(), "MESHP2P_HOME": str(home), "COLUMNS": "200"}


def test_no_command_prints_what_to_run_and_serves_the_console_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "meshp2p", "--console", str(port)], cwd=REPO,
                               env=idle_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def status() -> dict[str, object] | None:
            try:
                answer: dict[str, object] = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).json()
                return answer
            except httpx.HTTPError:
                return None

        wait_for(status, COMMAND_TIMEOUT_S, "the idle console")
        document = status()
        assert document is not None
        node = document["node"]
        assert isinstance(node, dict) and node["role"] == "idle" and node["api_url"] is None
        assert document["models"] == [] and document["mesh"] is None
        assert "meshp2p up --mesh-name poker-night" in json.dumps(node["next_steps"])
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "meshp2p console" in page.text
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events", timeout=10) as events:
            first = next(line for line in events.iter_lines() if line.startswith("data: "))
            assert '"role": "idle"' in first or '"role":"idle"' in first
        with sync_playwright() as playwright:  # the page itself says what to run
            browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                expect(page.get_by_role("heading", name="No node runs here yet")).to_be_visible(timeout=15_000)
                expect(page.locator("#idle-steps code").first).to_have_text("meshp2p up --mesh-name poker-night")
                expect(page.locator("#mesh-facts")).to_contain_text("no node runs here")
            finally:
                browser.close()
        refused = httpx.post(f"http://127.0.0.1:{port}/api/models/anything/drop", timeout=5)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    for command in ("meshp2p up --mesh-name poker-night", "meshp2p up --join", "meshp2p discover"):
        assert command in stderr
    assert f"http://127.0.0.1:{port}" in stderr and "Ctrl-C" in stderr
    assert not list(tmp_path.iterdir()), "idle mode writes nothing into MESHP2P_HOME"


def test_with_a_node_running_here_it_points_at_that_console(tmp_path: Path) -> None:
    # node.json as a running node writes it; this test process stands in for the node (its PID is alive).
    (tmp_path / "node.json").write_text(json.dumps({"pid": os.getpid(), "api_url": "http://127.0.0.1:9/v1",
                                                    "console_url": "http://127.0.0.1:7"}))
    done = subprocess.run([sys.executable, "-m", "meshp2p"], cwd=REPO, env=idle_env(tmp_path), capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert "A node already runs here" in done.stderr and "http://127.0.0.1:7" in done.stderr


def test_up_takes_the_port_over_from_an_idle_console(tmp_path: Path, tiny_models, llama_binaries) -> None:
    """The user left `meshp2p` running and starts a node: `up` stops the idle console and serves its own console on
    the same port, so the page they have open follows the node."""
    console = free_port()
    env = idle_env(tmp_path)
    idle = subprocess.Popen([sys.executable, "-m", "meshp2p", "--console", str(console)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    node = None
    try:
        def role() -> str | None:
            try:
                found: str = httpx.get(f"http://127.0.0.1:{console}/api/status", timeout=2).json()["node"]["role"]
                return found
            except (httpx.HTTPError, ValueError, KeyError):
                return None

        wait_for(lambda: role() == "idle", COMMAND_TIMEOUT_S, "the idle console")
        node = subprocess.Popen([sys.executable, "-m", "meshp2p", "up", "--solo", "--model", str(tiny_models.dense),
                                 "--threads", "1", "--port", str(free_port()), "--console", str(console)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: role() not in (None, "idle"), COMMAND_TIMEOUT_S, "the node's console on the same port")
        assert idle.wait(COMMAND_TIMEOUT_S) == 0, idle.stderr.read() if idle.stderr else ""
    finally:
        for process in (node, idle):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(COMMAND_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    assert node is not None and node.returncode == 0
