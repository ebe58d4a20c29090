"""How inference reports long work (a llama.cpp build, assembling the embedded model) without knowing who shows it.

The command line passes `cli/progress.RichProgress` (a rich bar on a terminal, a line every few percent in a log);
a library caller or a test passes nothing and sees nothing. One piece of work at a time: `begin`, then `update`s,
then `end`.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

log = logging.getLogger(__name__)

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


class TrackedProgress:
    """Progress kept as data for a display that polls it (`meshp2p up` draws these beside its hashing bars, since
    a terminal shows one live display at a time), with a log line when each piece of work starts and ends."""

    def __init__(self) -> None:
        #: title -> (done, total) of the work under way.
        self.active: dict[str, tuple[int, int]] = {}
        self._title: str | None = None

    def begin(self, title: str, *, total: int, unit: Unit) -> None:
        self._title = title
        self.active[title] = (0, total)
        log.info("%s: started (%s)", title, f"{total / 1e6:.1f} MB" if unit == "bytes" else f"{total} steps")

    def update(self, *, completed: int | None = None, advance: int = 0, stage: str | None = None) -> None:
        if self._title is None or self._title not in self.active:
            return
        done, total = self.active[self._title]
        self.active[self._title] = (completed if completed is not None else done + advance, total)

    def say(self, text: str) -> None:
        log.info("%s", text)

    def end(self, *, stage: str | None = None, keep: bool = True) -> None:
        if self._title is not None:
            self.active.pop(self._title, None)
            log.info("%s: %s", self._title, stage or "done")
        self._title = None
