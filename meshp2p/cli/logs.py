"""Where meshp2p's log goes and in what shape: rich on a terminal, one line per event everywhere else.

Tools (grep, journald, log shippers) read logs line by line, so off a terminal one event is one line, however
long its message: `2026-12-02T10:28:35.123Z INFO meshp2p.mesh message key=value ...`, newlines inside the message
or a traceback escaped as `\\n`. `--log-format json` gives one JSON object a line (`time`, `level`, `logger`,
`message`, then any `extra=` fields and `exc` for a traceback). `meshp2p up` also writes the same lines to
`$MESHP2P_HOME/logs/meshp2p.log` (appended; rotate it with logrotate's copytruncate), beside llama.cpp's own logs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from meshp2p.home import logs_dir

LOG_FORMATS = ("auto", "rich", "text", "json")
NODE_LOG_NAME = "meshp2p.log"
#: The attributes every LogRecord has; anything else on a record came from `extra=` and is printed as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class TextLineFormatter(logging.Formatter):
    """`time level logger message key=value ...` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, _one_line(record.getMessage())]
        parts += [f"{k}={_one_line(str(v))}" for k, v in _fields(record).items()]
        if record.exc_info:
            parts.append("exc=" + _one_line(self.formatException(record.exc_info)))
        return " ".join(parts)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per event."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage()}
        event.update({k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                      for k, v in _fields(record).items()})
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def _line_formatter(log_format: str) -> logging.Formatter:
    return JsonLineFormatter() if log_format == "json" else TextLineFormatter()


def configure_logging(console: Console, *, log_format: str, verbose: bool, node_log: bool) -> None:
    """The root logger's handlers: stderr in the chosen format, and with `node_log` the node's log file."""
    use_rich = log_format == "rich" or (log_format == "auto" and sys.stderr.isatty())
    stderr: logging.Handler
    if use_rich:
        stderr = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=True)
        stderr.setFormatter(logging.Formatter("%(message)s"))
    else:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(_line_formatter(log_format))
    handlers: list[logging.Handler] = [stderr]
    if node_log:
        logs_dir().mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(logs_dir() / NODE_LOG_NAME, encoding="utf-8")
        to_file.setFormatter(_line_formatter(log_format))
        handlers.append(to_file)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers, force=True)
