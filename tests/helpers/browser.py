"""Headless chromium for the web console's tests: Debian's own binary (tools/setup.sh --test installs it), driven by
Playwright for Python, which downloads no browser here (`executable_path`)."""

from __future__ import annotations

import os
import shutil

import pytest


def chromium_path() -> str:
    """The system's chromium (or $MESHP2P_CHROMIUM); a missing one fails the test with what to run."""
    found = os.environ.get("MESHP2P_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium on PATH: the console's browser tests drive Debian's chromium "
                    "(tools/setup.sh --test installs it; or set MESHP2P_CHROMIUM)")
    return found
