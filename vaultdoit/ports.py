"""Who listens on a local TCP port: read from /proc (Linux), no programs run.

A listening socket's inode is in /proc/net/tcp{,6}; the process holding it has
a ``socket:[inode]`` link under /proc/<pid>/fd. Other users' processes can be
seen only by root: then the holder is reported as unknown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
LISTEN = "0A"
# Addresses whose listener takes the port from 127.0.0.1 too: any, loopback, v4-mapped loopback.
_LOOPBACK_V4 = {"00000000", "0100007F"}
_LOOPBACK_V6 = {"0" * 32, "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


@dataclass(frozen=True)
class Holder:
    """The process listening on a port (pid None: it exists but this user cannot see it)."""

    port: int
    pid: int | None = None
    name: str = ""  # /proc/<pid>/comm
    command: str = ""  # its command line, spaces between the arguments

    def describe(self) -> str:
        if self.pid is None:
            return "a process this user cannot see (run as root to name it)"
        return f"{self.name} (pid {self.pid}: {self.command})"


def _listeners(proc: Path) -> dict[int, list[str]]:
    """Port -> inodes of the sockets listening on it where 127.0.0.1 reaches them."""
    found: dict[int, list[str]] = {}
    for table, local in (("tcp", _LOOPBACK_V4), ("tcp6", _LOOPBACK_V6)):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            address, _, port_hex = fields[1].partition(":")
            if address.upper() in local:
                found.setdefault(int(port_hex, 16), []).append(fields[9])
    return found


def _owner(inodes: set[str], proc: Path) -> int | None:
    links = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # gone, or another user's
        for fd in fds:
            try:
                if os.readlink(fd) in links:
                    return int(entry.name)
            except OSError:
                continue
    return None


def holder(port: int, proc: Path | None = None) -> Holder | None:
    """The process listening on ``port`` where 127.0.0.1 reaches it, or None when the port is free."""
    proc = proc or PROC
    inodes = _listeners(proc).get(port)
    if not inodes:
        return None
    pid = _owner(set(inodes), proc)
    if pid is None:
        return Holder(port)
    try:
        name = (proc / str(pid) / "comm").read_text().strip()
        command = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return Holder(port)
    return Holder(port, pid, name, command)


def free_port_from(port: int, limit: int = 32768, proc: Path | None = None) -> int | None:
    """The first port from ``port`` up (below ``limit``) with no listener, or None."""
    proc = proc or PROC
    taken = _listeners(proc)
    return next((candidate for candidate in range(port, limit) if candidate not in taken), None)
