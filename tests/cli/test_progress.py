"""Progress off a terminal: one line per stage and every 10 %, never a bar's control codes (CI logs, redirected
`meshp2p up`); on a terminal, rich's live bar."""

from __future__ import annotations

import io

from rich.console import Console

from meshp2p.cli.progress import RichProgress


def _run(terminal: bool) -> str:
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=terminal, width=100))
    progress.begin("llama.cpp b1", total=100, unit="percent")
    progress.update(stage="configuring")
    for percent in range(0, 101, 7):
        progress.update(completed=percent)
    progress.end(stage="installed")
    return out.getvalue()


def test_off_a_terminal_progress_is_plain_lines():
    assert _run(terminal=False).splitlines() == [
        "llama.cpp b1: started", "llama.cpp b1: configuring",
        *(f"   {p}%" for p in (0, 14, 28, 42, 56, 70, 84, 98)), "llama.cpp b1: installed",
    ]


def test_on_a_terminal_it_is_a_bar():
    shown = _run(terminal=True)
    assert "\x1b[" in shown and "installed" in shown and "   14%" not in shown


def test_off_a_terminal_a_download_prints_its_bytes_every_10_percent():
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=False, width=100))
    progress.begin("downloading m", total=50_000_000, unit="bytes")
    for _ in range(25):
        progress.update(advance=2_000_000)
    progress.end(stage="done")
    lines = out.getvalue().splitlines()
    assert lines[0] == "downloading m: started" and lines[-1] == "downloading m: done"
    # 4 % a step: a line at the first step into each new tenth
    assert [line.split(" (")[0] for line in lines[1:-1]] == [f"   {p}%" for p in (4, 12, 20, 32, 40, 52, 60, 72, 80,
                                                                                 92, 100)]
    assert lines[-2].startswith("   100% (50.0 of 50.0 MB, ") and lines[-2].endswith(" MB/s)")
