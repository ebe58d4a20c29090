"""Private loopback ports for child processes."""

from __future__ import annotations

import socket

from meshp2p.hosts import LOOPBACK_HOST


def free_loopback_port() -> int:
    """A port the kernel says is free on 127.0.0.1 right now.

    There is a short race between closing our probe socket and the child binding it; the supervisor
    treats a failed bind like any other failed start and retries on a fresh port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        port: int = sock.getsockname()[1]
        return port
