"""Build VMs sized to the host, and a guard that keeps the VMs running at once within it.

Sizes: a stage's VM gets ``memory`` and ``cpus`` from vault.toml (``[stages.<name>]``,
then the top level), else a default computed from the host that leaves it usable
(the seed's OPT-7): a quarter of its memory (1024 to 4096 MiB) and half its cores.

The guard: however many tasks doit runs at once (``-n``), a VM starts only when
the VMs already running leave room for it: their CPUs together within the host's
cores, their memory within the host's memory less what is kept free. A build
that does not fit waits (one line says so, and its wait is recorded); a VM
larger than the whole budget runs alone. Each running VM also holds a slot, its
own window of TCP ports (SSH, HTTP), so builds side by side never pick the
same port. The guard counts the VMs of this process: doit runs tasks in threads
(``-P thread``), and one build runs per project at a time (the build lock).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from vaultdoit.errors import VaultError

MIB = 2**20
MIN_MEMORY, MAX_MEMORY = 1024, 4096  # MiB: the default VM size stays in this range
KEEP_FREE_MIN = 2048  # MiB of the host's memory never given to build VMs
PACKER_MEMORY, PACKER_CPUS = 512, 1  # Packer's QEMU defaults, for templates that set neither

# Port windows: slot N gets [base + N * width, base + (N + 1) * width). Slot 0 starts at Packer's
# own defaults (2222, 5900, 8000); the windows stay below the kernel's ephemeral ports (32768),
# where the boot test's and other programs' ports come from.
# The SSH forward is host_port_min/max in Packer >= 1.6 and its QEMU plugin (ssh_host_port_min/max
# is the older, deprecated name; both get the same window).
# No VNC window: Packer 1.6's QEMU builder gives QEMU the display (port - vnc_port_min) but
# connects to the port itself, so any vnc_port_min but 5900 fails the build (found by the real
# two-variant build); the VNC port stays Packer's own pick in 5900-6000.
PORT_WINDOWS = {
    "host_port": (2222, 100),
    "ssh_host_port": (2222, 100),
    "http_port": (8000, 100),
}
PORT_VARS = tuple(f"{name}_{end}" for name in PORT_WINDOWS for end in ("min", "max"))


@dataclass(frozen=True)
class Host:
    """What the machine has: cores this process may use, and memory in MiB."""

    cpus: int
    memory: int

    @property
    def budget(self) -> VMSize:
        """What the build VMs running at once may use together."""
        return VMSize(memory=self.memory - max(KEEP_FREE_MIN, self.memory // 4), cpus=self.cpus)

    @property
    def default(self) -> VMSize:
        """A build VM's size when vault.toml sets none: leaves the host usable."""
        memory = min(MAX_MEMORY, max(MIN_MEMORY, self.memory // 4 // 256 * 256))
        return VMSize(memory=memory, cpus=max(1, self.cpus // 2))


@functools.cache
def host() -> Host:
    """This machine (no file is read: sysconf and the CPU affinity mask)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    return Host(cpus=max(1, cpus), memory=int(memory))


@dataclass(frozen=True)
class VMSize:
    """Memory (MiB) and virtual CPUs of one VM."""

    memory: int
    cpus: int

    def describe(self) -> str:
        return f"{self.cpus} CPU{'s' if self.cpus != 1 else ''}, {self.memory} MiB"


def size(memory: int | None, cpus: int | None, machine: Host | None = None) -> VMSize:
    """The VM size from vault.toml's values, the host's default where they are None."""
    default = (machine or host()).default
    return VMSize(memory=memory if memory is not None else default.memory,
                  cpus=cpus if cpus is not None else default.cpus)


def port_window(slot: int) -> dict[str, int]:
    """The Packer variables of slot ``slot``'s ports: ``host_port_min`` ... ``http_port_max``.
    Packer picks a free port in [min, max)."""
    found = {}
    for name, (base, width) in PORT_WINDOWS.items():
        found[f"{name}_min"] = base + slot * width
        found[f"{name}_max"] = base + (slot + 1) * width
    return found


@dataclass(frozen=True)
class Lease:
    """A running VM's place in the guard: its port slot and how long it waited for room."""

    slot: int
    waited: float


@dataclass
class Guard:
    """Admits VMs while they fit in ``budget`` together; see the module's docstring."""

    budget: VMSize
    poll: float = 1.0  # how often a waiting build looks again (a finishing VM also wakes it)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _running: dict[str, tuple[VMSize, int]] = field(default_factory=dict, repr=False)
    waits: dict[str, float] = field(default_factory=dict)  # label -> seconds it waited (for reports)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Admit nothing more (Ctrl-C): builds still waiting give up instead of starting a VM."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _fits(self, need: VMSize) -> bool:
        if not self._running:
            return True  # alone, even a VM larger than the budget runs
        memory = sum(s.memory for s, _ in self._running.values()) + need.memory
        cpus = sum(s.cpus for s, _ in self._running.values()) + need.cpus
        return memory <= self.budget.memory and cpus <= self.budget.cpus

    @contextmanager
    def room(self, label: str, need: VMSize, say: Callable[[str], None] | None = None) -> Iterator[Lease]:
        """Wait until a VM of size ``need`` fits beside the running ones; hold its place meanwhile."""
        start = time.monotonic()
        waiting: str | None = None
        with self._cond:
            if not self._fits(need):
                used = VMSize(memory=sum(s.memory for s, _ in self._running.values()),
                              cpus=sum(s.cpus for s, _ in self._running.values()))
                waiting = (f"{label} waits for room: its VM needs {need.describe()}; running "
                           f"{', '.join(sorted(self._running))} use {used.cpus} of {self.budget.cpus} CPUs "
                           f"and {used.memory} of {self.budget.memory} MiB")
        # Said outside the lock: a slow or broken stderr never holds up the other builds.
        if waiting is not None and say is not None:
            say(waiting)
        with self._cond:
            while not self._closed and not self._fits(need):
                self._cond.wait(self.poll)
            if self._closed:
                raise VaultError(f"{label} did not start: the build was interrupted")
            slots = {slot for _, slot in self._running.values()}
            slot = next(i for i in range(len(slots) + 1) if i not in slots)
            self._running[label] = (need, slot)
            waited = time.monotonic() - start
            self.waits[label] = waited
        try:  # from here on the place is held: whatever happens, it is given back
            if waited >= 0.5 and say is not None:
                say(f"{label} got room after {waited:.0f} s")
            yield Lease(slot=slot, waited=waited)
        finally:
            with self._cond:
                self._running.pop(label, None)
                self._cond.notify_all()


_GUARD: Guard | None = None
_GUARD_LOCK = threading.Lock()


def guard() -> Guard:
    """The process's guard, sized to this host."""
    global _GUARD
    with _GUARD_LOCK:
        if _GUARD is None:
            _GUARD = Guard(budget=host().budget)
        return _GUARD
