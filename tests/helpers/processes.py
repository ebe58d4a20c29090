"""Real `meshp2p up` and `meshp2p bootstrap` processes for tests, and the small tools around them (free ports,
live PIDs, waiting for a condition). The fixtures that use them are in tests/conftest.py.

Nodes run as separate processes (`python -m meshp2p up ...`) on 127.0.0.1 with their own MESHP2P_HOME, the
way a user runs them; every fixture stops what it started and checks that no child or port is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))


#: Generous: a cold llama-server on a loaded 2-core CI machine; the gemma model takes a few seconds.
NODE_READY_TIMEOUT_S = 120.0
NODE_STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Free for a new server: nothing listens (TIME_WAIT leftovers of closed connections do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is not running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class TinyModels:
    dense: Path
    other: Path
    embed: Path
    #: make_tiny_gguf's `toolcall` variant: fixed replies and tool calls (see `write_toolcall_gguf`).
    toolcall: Path


@dataclass(eq=False)
class NodeProcess:
    """A `meshp2p up` child process and the ports it was told to use."""

    process: subprocess.Popen[bytes]
    home: Path
    api_port: int
    console_port: int
    log_path: Path
    seen_children: set[int] = field(default_factory=set)
    #: How it was started, so it can start again on other ports (see `wait_ready`).
    up_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    port_retries: int = 3

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v1"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.console_url + "/api/status", timeout=5).json()
        self.seen_children.update(m["pid"] for m in data["models"] if m["pid"])
        return data

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = NODE_READY_TIMEOUT_S) -> dict[str, Any]:
        """Poll the console until every model is ready; fail early (with the node's output) if it exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "is already in use" in self.output() and self.port_retries > 0:
                    # Another process took the free port we picked before our node bound it: pick again.
                    self.port_retries -= 1
                    self._start(free_port(), free_port())
                    continue
                pytest.fail(f"meshp2p up exited with {self.process.returncode}:\n{self.output()}")
            try:
                status = self.status()
                if all(m["state"] == "ready" for m in status["models"]):
                    return status
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        pytest.fail(f"node not ready after {timeout_s} s:\n{self.output()}")

    def stop(self) -> int:
        return interrupt(self.process, self.log_path)

    def _start(self, api_port: int, console_port: int) -> None:
        self.api_port, self.console_port = api_port, console_port
        cmd = [sys.executable, "-m", "meshp2p", "up", "--port", str(api_port), "--console", str(console_port),
               "--no-build", *self.up_args]
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)


def interrupt(process: subprocess.Popen[bytes], log_path: Path) -> int:
    """Ctrl-C, as a user would; escalate to SIGKILL (and fail) only if it hangs. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(NODE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(NODE_STOP_TIMEOUT_S)
            pytest.fail(f"{process.args} ignored Ctrl-C for {NODE_STOP_TIMEOUT_S} s:\n"
                        f"{log_path.read_text(errors='replace')}")
    return process.returncode


#: The user's own settings that would steer a test's nodes elsewhere (a real bootstrap peer, another home).
_NOT_INHERITED = ("MESHP2P_BOOTSTRAP", "MESHP2P_HOME")


def clean_environ() -> dict[str, str]:
    """This process's environment without the user's meshp2p settings: tests say what their nodes use."""
    return {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}


def start_node(
    home: Path, *args: str, env: dict[str, str] | None = None, api_port: int | None = None
) -> NodeProcess:
    home.mkdir(parents=True, exist_ok=True)
    node = NodeProcess(None, home, 0, 0, home / "node-output.log", up_args=args,  # type: ignore[arg-type]
                       env={**clean_environ(), "MESHP2P_HOME": str(home), **(env or {})})
    node._start(api_port or free_port(), free_port())
    return node


def stop_all(nodes: list[NodeProcess]) -> None:
    """Stop every node, each in its own try, then check each left nothing behind; fail once, at the end, with
    every problem found (one node that hangs must not leave the others running)."""
    problems: list[str] = []
    for node in nodes:
        try:
            node.stop()
        except BaseException as exc:  # pytest.fail is an OutcomeException, not an Exception
            problems.append(f"stopping {node.home.name}: {exc}")
    for node in nodes:
        try:
            assert_nothing_left(node)
        except BaseException as exc:
            problems.append(f"{node.home.name} left something behind: {exc}")
    if problems:
        pytest.fail("\n".join(problems))


def assert_nothing_left(node: NodeProcess) -> None:
    leaked = [pid for pid in node.seen_children if pid_alive(pid)]
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    assert not leaked, f"llama-server processes outlived their node: {leaked}"
    for port in (node.api_port, node.console_port):
        assert port_is_free(port), f"port {port} still in use after the node stopped"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@dataclass
class BootstrapProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    addr: str

    def stop(self) -> int:
        return interrupt(self.process, self.log_path)


def start_bootstrap(home: Path, timeout_s: float = 60.0) -> BootstrapProcess:
    """`meshp2p bootstrap` on loopback; returns once it printed the address others dial."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "bootstrap-output.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "meshp2p", "bootstrap"], stdout=out,
                                   stderr=subprocess.STDOUT, env={**clean_environ(), "MESHP2P_HOME": str(home)})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("/ip4/127.0.0.1/") and "/p2p/" in line:
                return BootstrapProcess(process, log_path, line.strip())
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait(NODE_STOP_TIMEOUT_S)
    pytest.fail(f"bootstrap node did not start:\n{log_path.read_text(errors='replace')}")


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> float:
    """Poll `predicate()` until truthy; returns the seconds it took, fails with `what` after the deadline."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - start


#: How long a bare llama-server on a tiny model may take to answer /health.
LLAMA_READY_TIMEOUT_S = 60.0


@contextmanager
def llama_server(binary: Path, model: Path, log_path: Path, *args: str) -> Iterator[str]:
    """A bare llama-server on `model` (no meshp2p in between) on a free loopback port: its base URL while the
    block runs, stopped (SIGTERM, then SIGKILL) after. A server that exits while loading fails the test with its
    log."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                    "-t", "1", "--no-webui", *args],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"llama-server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                return httpx.get(base + "/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, LLAMA_READY_TIMEOUT_S, f"llama-server to load {model.name}", interval_s=0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(NODE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(NODE_STOP_TIMEOUT_S)
