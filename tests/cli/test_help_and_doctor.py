"""The command line documents itself, and `doctor` reports what it found."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from helpers.processes import clean_environ

from meshp2p.cli.main import build_parser
from meshp2p.inference.binaries import LLAMA_CPP_TAG


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


@pytest.mark.parametrize("name", [n for n, _ in _subparsers(build_parser())])
def test_every_flag_of_every_command_has_help(name):
    sub = dict(_subparsers(build_parser()))[name]
    assert sub.description, f"`meshp2p {name}` has no description"
    for action in sub._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert action.help and len(action.help) > 10, f"{name} {action.option_strings} lacks help"


def test_help_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "meshp2p", "up", "--help"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    for flag in ("--model", "--port", "--ctx-size", "--max-vram", "--listen-all", "--threads", "--console"):
        assert flag in out


def test_doctor_reports_the_pinned_build(tmp_path, llama_binaries):
    r = subprocess.run([sys.executable, "-m", "meshp2p", "doctor"], capture_output=True, text=True, timeout=60,
                       env={**clean_environ(), "MESHP2P_HOME": str(tmp_path), "COLUMNS": "250"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(llama_binaries.server) in r.stdout
    assert f"{LLAMA_CPP_TAG} (pinned: {LLAMA_CPP_TAG})" in r.stdout


def test_doctor_fails_with_the_fix_when_binaries_are_missing(tmp_path):
    r = subprocess.run([sys.executable, "-m", "meshp2p", "doctor"], capture_output=True, text=True, timeout=60,
                       env={**clean_environ(), "MESHP2P_HOME": str(tmp_path), "COLUMNS": "250",
                            "MESHP2P_LLAMA_DIR": str(tmp_path / "nothing-here")})
    assert r.returncode == 1
    assert "MESHP2P_LLAMA_DIR" in r.stdout
