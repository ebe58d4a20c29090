"""README's two set-up commands are the ones CI runs and the ones that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _code_lines() -> list[str]:
    readme = (REPO / "README.md").read_text()
    return [line.strip() for block in re.findall(r"```\n(.*?)```", readme, re.S) for line in block.splitlines()]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = next(line for line in _code_lines() if "pytest" in line)
    ci = (REPO / ".ci/run").read_text().splitlines()
    assert any(line.startswith(test_command + " ") or line == test_command for line in ci)


def test_readme_run_command_uses_the_setup_script_and_up():
    run_command = next(line for line in _code_lines() if "meshp2p up" in line and "setup.sh" in line)
    assert run_command.startswith("tools/setup.sh && ")
    assert (REPO / "tools/setup.sh").stat().st_mode & 0o111
