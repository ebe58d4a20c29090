"""How inference reports long work (a llama.cpp build, assembling the embedded model) without knowing who shows it.

The command line passes `cli/progress.RichProgress` (a rich bar on a terminal, a line every few percent in a log);
a library caller or a test passes nothing and sees nothing. One piece of work at a time: `begin`, then `update`s,
then `end`.
"""

from __future__ import annotations

from typing import Literal, Protocol

Unit = Literal["percent", "bytes"]


class ProgressSink(Protocol):
    def begin(self, title: str, *, total: int, unit: Unit) -> None:
        """Work called `title` starts; `total` in `unit`s."""
        ...

    def update(self, *, completed: int | None = None, advance: int = 0, stage: str | None = None) -> None:
        """How far it got (`completed`, or `advance` more), and the stage it is in when that changed."""
        ...

    def say(self, text: str) -> None:
        """Lines the operator should read as they are (a failed build's last output)."""
        ...

    def end(self, *, stage: str | None = None, keep: bool = True) -> None:
        """The work is over; `keep` leaves its bar on screen."""
        ...


class Silent:
    """Reports nothing."""

    def begin(self, title: str, *, total: int, unit: Unit) -> None:
        pass

    def update(self, *, completed: int | None = None, advance: int = 0, stage: str | None = None) -> None:
        pass

    def say(self, text: str) -> None:
        pass

    def end(self, *, stage: str | None = None, keep: bool = True) -> None:
        pass


SILENT = Silent()
