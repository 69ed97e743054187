"""The stall watchdog: stop a VM that shows no sign of life for too long.

A VM shows life by printing on its serial console, by Packer printing
something new (provisioner output; its repeated "Waiting for SSH" does not
count), by writing its disk, or, for the boot test, by sshd answering. When
none of that happens for the stall timeout the VM is stopped with one line
naming its console log and the likely cause: most often an accelerator that
creates a VM but does not run guest code, where Packer would otherwise wait
for SSH until its own timeout (20 minutes in the shipped templates).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# A kernel booted directly prints on its console within seconds of QEMU's start.
DIRECT_BOOT = 300.0
# A disk image boots through its own boot loader, perhaps with its console elsewhere.
DISK_IMAGE = 900.0
# An ISO installer may print nothing on the serial console for many minutes.
INSTALLER = 1800.0
# Packer repeats these while it waits for the guest: they say nothing about the guest.
IDLE_OUTPUT = re.compile(r"Waiting for (SSH|WinRM)")
_TEMPLATE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def qemuarg_values(attrs: Mapping[str, Any], flag: str) -> list[str]:
    """Values given to ``flag`` in a qemu source's ``qemuargs`` (``[["-serial", "file:x"], ...]``)."""
    found = []
    for entry in attrs.get("qemuargs") or []:
        words = entry if isinstance(entry, list) else str(entry).split(None, 1)
        if len(words) >= 2 and words[0] == flag and isinstance(words[1], str):
            found.append(words[1])
    return found


def console_log(attrs: Mapping[str, Any], root: Path) -> Path | None:
    """The file a Packer qemu source sends its serial console to (``-serial file:PATH``), if known."""
    for value in qemuarg_values(attrs, "-serial"):
        if not value.startswith("file:"):
            continue
        # Packer fills in {{ .Name }} (the vm_name) and {{ .OutputDir }} before starting QEMU.
        known = {"Name": attrs.get("vm_name"), "OutputDir": attrs.get("output_directory")}
        text = _TEMPLATE.sub(lambda m: str(known.get(m.group(1)) or m.group(0)), value[len("file:"):])
        if "{{" in text or not isinstance(known["Name"], str):
            return None
        return Path(os.path.normpath(root / text))
    return None


def boots_kernel(attrs: Mapping[str, Any]) -> bool:
    """Whether the source boots a kernel directly (``-kernel`` in qemuargs)."""
    return bool(qemuarg_values(attrs, "-kernel"))


def automatic_timeout(attrs: Mapping[str, Any]) -> float:
    """The stall timeout a stage gets when vault.toml leaves it at 0 (automatic)."""
    if not attrs.get("disk_image"):
        return INSTALLER
    return DIRECT_BOOT if boots_kernel(attrs) else DISK_IMAGE


def timeout_for(configured: float | None, automatic: float) -> float:
    """``configured`` seconds when set (> 0), else the automatic value."""
    return float(configured) if configured and configured > 0 else automatic


class _FileSign:
    """A file whose size or modification time changes (a console log, a disk image)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def changed(self) -> bool:
        now = self._stat()
        if now == self.seen:
            return False
        self.seen = now
        return True

    def empty(self) -> bool:
        return self.seen is None or self.seen[0] == 0


class _OutputSign:
    """New lines in a program's log, other than Packer's idle waiting lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size  # only what is written from now on counts
        except OSError:
            self.offset = 0
        self.partial = b""

    def changed(self) -> bool:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return False
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return any(line.strip() and not IDLE_OUTPUT.search(line.decode("utf-8", "replace")) for line in lines)


class Watchdog:
    """Callable for ``proc.run(watch=...)``: None while the VM shows life, else the error text.

    ``label`` names the task (``stage:drivers``); ``console`` is the VM's serial
    log, ``output`` the log Packer's output goes to, ``disks`` the images the VM
    writes. ``accelerator`` picks the likely cause named in the message.
    """

    def __init__(self, *, label: str, timeout: float, console: Path | None = None, output: Path | None = None,
                 disks: Sequence[Path] = (), accelerator: str = "tcg", root: Path | None = None,
                 vm: str = "the build VM", clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.timeout = timeout
        self.accelerator = accelerator
        self.root = root
        self.vm = vm
        self.clock = clock
        self.console = _FileSign(console) if console is not None else None
        self.output = _OutputSign(output) if output is not None else None
        self.disks = [_FileSign(d) for d in disks]
        self.last = clock()

    @property
    def interval(self) -> float:
        """How often to call the watchdog: often enough to stop within ~5% of the timeout."""
        return min(5.0, max(0.1, self.timeout / 20))

    def progress(self) -> None:
        """Record a sign of life seen elsewhere (sshd answered)."""
        self.last = self.clock()

    def __call__(self) -> str | None:
        signs: list[_FileSign | _OutputSign] = [*self.disks]
        if self.console is not None:
            signs.append(self.console)
        if self.output is not None:
            signs.append(self.output)
        # Every sign is read each time, so each one's baseline stays current.
        if any([sign.changed() for sign in signs]):
            self.last = self.clock()
            return None
        if self.clock() - self.last < self.timeout:
            return None
        return self.message()

    def _show(self, path: Path) -> str:
        if self.root is not None:
            try:
                return str(path.relative_to(self.root))
            except ValueError:
                pass
        return str(path)

    def cause(self) -> str:
        """The likely reason and the fix, for the message."""
        if self.accelerator == "kvm":
            return ('the accelerator may not run guest code here (fix: set accelerator = "tcg" in vault.toml, '
                    "or raise stall_timeout)")
        return ("the guest may be stuck at a prompt or in a task that hangs (fix: read the console log; "
                "raise stall_timeout if the step is only slow)")

    def message(self) -> str:
        """The one line that stops the VM."""
        seconds = f"{self.timeout:.0f} s"
        if self.console is not None:
            new = "" if self.console.empty() else " new"
            return (f"{self.label}: {self.vm} printed nothing{new} on its console for {seconds} "
                    f"(serial log: {self._show(self.console.path)}); {self.cause()}")
        quiet = ["no console log to watch"]
        if self.output is not None:
            quiet.append(f"Packer printed nothing but 'Waiting for SSH' (log: {self._show(self.output.path)})")
        if self.disks:
            quiet.append("its disk did not change")
        return f"{self.label}: {self.vm} showed no progress for {seconds} ({', '.join(quiet)}); {self.cause()}"
