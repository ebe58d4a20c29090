"""This machine's addresses as peers see them: what a node announces when it listens on every interface.

Interfaces are listed (ifaddr), not guessed from the hostname: on many Linux desktops the hostname resolves to
127.0.1.1, which would leave a `--listen-all` node announcing no address another machine can dial.
"""

from __future__ import annotations

import ipaddress

import ifaddr


def is_loopback_host(host: str) -> bool:
    """True for a listen address only this machine can reach, where LAN discovery cannot work."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def lan_ipv4s() -> list[str]:
    """This machine's non-loopback IPv4 interface addresses, the ones LAN peers can dial."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                found.append(ip.ip)
    return sorted(set(found))
