"""Progress of long work as the operator sees it: a rich bar on a terminal, plain lines in a log.

Implements inference/progress.py's ProgressSink. Off a terminal (CI, a redirected `meshp2p up`) a live bar would
be noise, so a stage change is one line and work prints a line every PLAIN_STEP_PERCENT (a download's with its bytes
and speed).
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from meshp2p.inference.progress import Unit

PLAIN_STEP_PERCENT = 10


class RichProgress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._title = ""
        self._unit: Unit = "percent"
        self._reported = -PLAIN_STEP_PERCENT
        self._total = 0
        self._done = 0
        self._started = 0.0

    def begin(self, title: str, *, total: int, unit: Unit) -> None:
        self._title, self._unit, self._reported = title, unit, -PLAIN_STEP_PERCENT
        self._total, self._done, self._started = total, 0, time.monotonic()
        if not self.console.is_terminal:
            self._plain(f"{title}: started")
            return
        columns: tuple[ProgressColumn, ...]
        if unit == "bytes":
            columns = (TextColumn("[bold]{task.fields[title]}[/] {task.description}"), BarColumn(),
                       DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        else:
            columns = (TextColumn("[bold]{task.fields[title]}[/] {task.description}"), BarColumn(),
                       TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
        self._bar = Progress(*columns, console=self.console)
        self._bar.start()
        self._task = self._bar.add_task("", total=total, title=title)

    def update(self, *, completed: int | None = None, advance: int = 0, stage: str | None = None) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=completed, advance=advance or None, description=stage)
            return
        if stage is not None:
            self._plain(f"{self._title}: {stage}")
        if completed is not None and self._unit == "percent" and completed >= self._reported + PLAIN_STEP_PERCENT:
            self._plain(f"   {completed}%")
            self._reported = completed
        if self._unit == "bytes" and self._total > 0:
            self._done = completed if completed is not None else self._done + advance
            percent = 100 * self._done // self._total
            if percent >= self._reported + PLAIN_STEP_PERCENT:
                elapsed = max(time.monotonic() - self._started, 1e-3)
                self._plain(f"   {percent}% ({self._done / 1e6:.1f} of {self._total / 1e6:.1f} MB, "
                            f"{self._done / 1e6 / elapsed:.1f} MB/s)")
                self._reported = percent - percent % PLAIN_STEP_PERCENT

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def end(self, *, stage: str | None = None, keep: bool = True) -> None:
        bar, self._bar, self._task = self._bar, None, None
        if bar is None:
            self._plain(f"{self._title}: {stage or 'done'}")
            return
        if stage is not None and bar.task_ids:
            bar.update(bar.task_ids[0], description=stage)
        if not keep:
            for task in bar.task_ids:
                bar.remove_task(task)
        bar.stop()

    def _plain(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)
