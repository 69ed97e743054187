"""What a boot test boots and checks (the verify task's plan; vm.py runs it).

Apart from vm.py so that planning the verify task imports nothing of the
machinery that boots a VM (asyncio, QMP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaultdoit import watchdog

if TYPE_CHECKING:
    from vaultdoit import accel

DEFAULT_APPEND = "root=/dev/vda rw console=ttyS0"


@dataclass(frozen=True, kw_only=True)
class BootSpec:
    """What to boot, how, and what must be true once it is up."""

    image: Path
    kernel: Path | None = None  # direct kernel boot: the images carry no boot loader
    initrd: Path | None = None
    append: str = DEFAULT_APPEND
    accelerator: str = "auto"
    memory: int = 1024
    cpus: int = 2
    user: str = "vault"
    key: Path
    extra_keys: tuple[Path, ...] = ()  # tried after ``key`` (an image whose build key was replaced)
    snapshot: bool = True  # False: the guest writes the image (a development image, never a final one)
    units: tuple[str, ...] = ()  # systemd units that must be active
    checks: tuple[str, ...] = ()  # shell commands run over SSH as ``user``; each must exit 0
    boot_timeout: float = 600.0
    shutdown_timeout: float = 120.0
    check_timeout: float = 300.0  # per check, including `systemctl is-system-running --wait`
    log_dir: Path  # serial.log, qemu.log and ssh.log go here
    probe: accel.ProbeSpec | None = None  # for accelerator = "auto" (default: probe with ``kernel``)
    stall_timeout: float = 0.0  # no console output and no sshd for this long stops the boot; 0 = automatic

    def stall_seconds(self) -> float:
        """The stall timeout: as set, else short for a kernel whose console is the serial port."""
        direct = self.kernel is not None and "console=ttyS" in self.append
        return watchdog.timeout_for(self.stall_timeout, watchdog.DIRECT_BOOT if direct else watchdog.DISK_IMAGE)
