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
from helpers.processes import REPO, clean_environ, free_port, wait_for

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
        node, idle = document["node"], document["idle"]
        assert isinstance(node, dict) and node["role"] == "idle" and node["api_url"] is None
        assert document["models"] == [] and document["mesh"] is None
        assert isinstance(idle, dict) and "meshp2p up --mesh-name poker-night" in json.dumps(idle["next_steps"])
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
