"""What a process tree exposes, for the tests that check services stay private."""

from __future__ import annotations

import ipaddress


def listening_addresses(pid: int) -> set[str]:
    """The IP addresses that process ``pid`` and its descendants accept TCP connections on."""
    import psutil

    root = psutil.Process(pid)
    addresses = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            addresses |= {c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:  # a process that ended while we looked
            pass
    return addresses


def all_loopback(addresses: set[str]) -> bool:
    return bool(addresses) and all(ipaddress.ip_address(a.removeprefix("::ffff:")).is_loopback for a in addresses)
