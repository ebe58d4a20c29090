"""Off a terminal, one log event is one line: plain text by default, JSON with --log-format json.

A real `meshp2p up` (tiny model, --solo, -v so libp2p's long debug lines are in) with its output redirected to a
file, as under systemd or `> node.log`; both its stderr and $MESHP2P_HOME/logs/meshp2p.log are read back.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from helpers.processes import clean_environ, free_port, interrupt

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.\-]+ .*$")
STARTED_S = 120.0


def _run_node(tmp_path, tiny_models, *log_args: str) -> tuple[str, str]:
    """Start `up`, wait until it serves, stop it with Ctrl-C; returns (redirected output, node log file)."""
    home = tmp_path / "home"
    out_path = tmp_path / "output.log"
    cmd = [sys.executable, "-m", "meshp2p", "-v", *log_args, "up", "--solo", "--model", str(tiny_models.dense),
           "--threads", "1", "--port", str(free_port()), "--console", str(free_port()), "--no-build"]
    with out_path.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   env={**clean_environ(), "MESHP2P_HOME": str(home)})
    try:
        deadline = time.monotonic() + STARTED_S
        while "API listening" not in out_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"up did not start:\n{out_path.read_text(errors='replace')}")
            time.sleep(0.05)
    finally:
        assert interrupt(process, out_path) == 0
    return out_path.read_text(), (home / "logs" / "meshp2p.log").read_text()


def test_text_lines_off_a_terminal(tmp_path, tiny_models):
    output, node_log = _run_node(tmp_path, tiny_models)
    lines = node_log.splitlines()
    assert any("API listening on" in line for line in lines)
    assert max(len(line) for line in lines) > 120, "no long line to show that nothing wraps"
    for line in lines:
        assert TEXT_LINE.match(line), f"not one event per line: {line!r}"
    # The redirected output carries the same lines (plus the summary printed for the operator).
    logged = [line for line in output.splitlines() if re.match(r"^\d{4}-\d\d-\d\dT", line)]
    assert len(logged) == len(lines) and all(TEXT_LINE.match(line) for line in logged)


def test_json_lines_with_log_format_json(tmp_path, tiny_models):
    _, node_log = _run_node(tmp_path, tiny_models, "--log-format", "json")
    events = [json.loads(line) for line in node_log.splitlines()]
    assert events and all({"time", "level", "logger", "message"} <= set(e) for e in events)
    assert any(e["logger"] == "meshp2p.api" or "API listening" in e["message"] for e in events)
