"""Boot test of a built image: QEMU with a QMP socket, checks over SSH, clean power-off.

The image is opened with ``snapshot=on``, so a test never writes it. QEMU is
started through proc.spawn and never outlives ``boot_test`` (also on Ctrl-C or
any error). Check failures are reported in the BootReport; only "could not boot
at all" raises BootError.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # qemu.qmp (with asyncio) is imported only when a VM boots
    from qemu.qmp import QMPClient

from vaultdoit import accel, proc, watchdog
from vaultdoit.bootspec import DEFAULT_APPEND, BootSpec
from vaultdoit.errors import BootError, Stalled

__all__ = ["BootSpec", "BootReport", "CheckResult", "boot_test"]

QMP_CONNECT_TIMEOUT = 30.0  # QEMU creates its QMP socket within a second; 30 s covers a loaded host
SSH_ATTEMPT_TIMEOUT = 60.0  # one login attempt; a TCG guest under load can be slow to authenticate
KEY_REFUSED_GRACE = 90.0  # a key refused this long after sshd answered will not be accepted later
EXIT_AFTER_SHUTDOWN = 30.0  # QEMU quits right after SHUTDOWN; this only bounds a stuck QEMU
TIMED_OUT = 124  # exit code of ssh_run when a command outlives its timeout (as timeout(1))
PORT_IN_USE = "Could not set up host forwarding rule"

# Serial console lines after which the guest will never answer SSH: fail at once
# instead of waiting for the boot timeout.
FATAL_CONSOLE = (
    "Kernel panic - not syncing",
    "Gave up waiting for root file system device",  # initramfs-tools: root never appeared
    "You are in emergency mode",
    "Dropping to a shell!",
)


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, and why not."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class BootReport:
    """Outcome of a boot test that got as far as an SSH login."""

    ok: bool
    checks: tuple[CheckResult, ...]
    boot_seconds: float
    shutdown_seconds: float
    serial_log: Path
    accelerator: str
    image: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the verify task's report file)."""
        return {
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "boot_seconds": round(self.boot_seconds, 1),
            "shutdown_seconds": round(self.shutdown_seconds, 1),
            "serial_log": str(self.serial_log),
            "accelerator": self.accelerator,
            "image": str(self.image) if self.image is not None else None,
        }

    def render(self) -> str:
        """One PASS/FAIL line per check, then the boot and shutdown times."""
        lines = []
        for check in self.checks:
            line = f"{'PASS' if check.ok else 'FAIL'}  {check.name}"
            if check.detail and not check.ok:
                # One line per check: the full detail is in to_dict() and ssh.log.
                line += ": " + _one_line(check.detail)
            lines.append(line)
        lines.append(f"boot {self.boot_seconds:.1f} s, shutdown {self.shutdown_seconds:.1f} s "
                     f"({self.accelerator}); serial log: {self.serial_log}")
        lines.append("boot test " + ("passed" if self.ok else "FAILED"))
        return "\n".join(lines)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= limit else "…" + flat[-limit:]


def _output_tail(text: str, lines: int = 15, chars: int = 2000) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (QEMU may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _opt(value: str | os.PathLike[str]) -> str:
    """Escape a value inside a QEMU ``key=value,...`` option: a comma is written twice."""
    return os.fspath(value).replace(",", ",,")


def qemu_argv(spec: BootSpec, accel_name: str, port: int, qmp_socket: Path | None, serial_log: Path | str,
              *, reboot: bool = False) -> list[str]:
    """The QEMU command line of a boot test (pure: no files or processes touched).

    ``serial_log``: a file for the console, or a character device as QEMU writes it
    (``mon:stdio`` for a console on the terminal). ``reboot``: let the guest reboot.
    """
    serial = f"file:{serial_log}" if isinstance(serial_log, Path) else serial_log
    argv = [
        "qemu-system-x86_64",
        "-nodefaults", "-no-user-config", "-display", "none",
        # A boot test never reboots: a reset (panic=N, reboot loop) ends QEMU and the test at once.
        *([] if reboot else ["-no-reboot"]),
        "-accel", accel_name, "-cpu", "host" if accel_name == "kvm" else "max",
        "-m", str(spec.memory), "-smp", str(spec.cpus),
        # snapshot=on: guest writes go to a throwaway overlay, never to the image.
        "-drive", f"file={_opt(spec.image)},if=virtio,format=qcow2" + (",snapshot=on" if spec.snapshot else ""),
        # Loopback only: the guest's sshd is never reachable from the network.
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", serial,
    ]
    if qmp_socket is not None:
        argv += ["-qmp", f"unix:{_opt(qmp_socket)},server=on,wait=off"]
    if spec.kernel is not None:
        argv += ["-kernel", str(spec.kernel), "-append", spec.append]
        if spec.initrd is not None:
            argv += ["-initrd", str(spec.initrd)]
    return argv


def ssh_argv(spec: BootSpec, port: int, command: str) -> list[str]:
    """ssh to the guest's forwarded port with the spec's key, trusting the throwaway host key."""
    keys = [arg for key in (spec.key, *spec.extra_keys) for arg in ("-i", str(key))]
    return [
        "ssh", *keys, "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
        # Only this key: agent keys tried first could exhaust sshd's MaxAuthTries.
        "-o", "IdentitiesOnly=yes",
        # Keeps "Permanently added ..." out of the checks' output.
        "-o", "LogLevel=ERROR",
        f"{spec.user}@127.0.0.1", command,
    ]


def ssh_run(port: int, spec: BootSpec, command: str, *, timeout: float | None = None,
            logfile: Path | None = None) -> tuple[int, str]:
    """Run ``command`` in the guest as ``spec.user``; (exit code, output), 124 on timeout. Never raises."""
    limit = spec.check_timeout if timeout is None else timeout
    try:
        return proc.check_output(ssh_argv(spec, port, command), timeout=limit, logfile=logfile)
    except subprocess.TimeoutExpired:
        return TIMED_OUT, f"timed out after {limit:.0f} s"


def ssh_banner(port: int, timeout: float = 5.0) -> bool:
    """True when sshd answers on ``port``: QEMU accepts TCP there long before the guest is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


class _ConsoleWatch:
    """Reads the serial log as it grows and spots lines after which SSH will never come up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""

    def fatal_line(self) -> str | None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return None
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", "replace")
        lines = text.split("\n")
        self.partial = lines.pop()  # a line still being written is checked when complete
        for line in lines:
            if any(marker in line for marker in FATAL_CONSOLE):
                return line.strip()
        return None


class _QemuExited(Exception):
    """QEMU stopped before the guest was reachable (internal; becomes BootError or a retry)."""

    def __init__(self, returncode: int, log_text: str) -> None:
        super().__init__(returncode)
        self.returncode = returncode
        self.log_text = log_text


def _read_from(path: Path, offset: int) -> str:
    """What was appended to ``path`` after ``offset`` (this attempt's part of qemu.log)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


async def _connect_qmp(sock_path: Path, qemu: subprocess.Popen[bytes], deadline: float) -> QMPClient:
    from qemu.qmp import QMPClient, QMPError

    """Connect once the socket exists; a QEMU that dies first ends the wait at once."""
    while True:
        if qemu.poll() is not None:
            raise _QemuExited(qemu.returncode, "")
        if sock_path.exists():
            client = QMPClient("vaultdoit-verify")
            try:
                await asyncio.wait_for(client.connect(str(sock_path)), timeout=10)
                return client
            except (QMPError, OSError, asyncio.TimeoutError):
                pass  # QEMU still starting (or gone: the poll above tells)
        if time.monotonic() > deadline:
            raise BootError(f"QEMU's QMP socket {sock_path} never answered")
        await asyncio.sleep(0.1)


async def _query_status(client: QMPClient) -> str:
    reply = await client.execute("query-status")
    return str(reply.get("status")) if isinstance(reply, dict) else repr(reply)


async def _powerdown(client: QMPClient, qemu: subprocess.Popen[bytes], timeout: float) -> CheckResult:
    from qemu.qmp import QMPError

    """ACPI power button, then wait for SHUTDOWN and for QEMU to quit; hard stop otherwise."""
    try:
        with client.listener("SHUTDOWN") as listener:
            await client.execute("system_powerdown")
            event = await asyncio.wait_for(listener.get(), timeout=timeout)
    except asyncio.TimeoutError:
        proc.stop(qemu, grace=5.0)
        return CheckResult("clean shutdown", False,
                           f"no SHUTDOWN event within {timeout:.0f} s of system_powerdown; QEMU stopped")
    except (QMPError, OSError, EOFError) as exc:
        proc.stop(qemu, grace=5.0)
        return CheckResult("clean shutdown", False, f"QMP failed during power-off: {exc}")
    data = event.get("data")
    reason = str(data.get("reason", "?")) if isinstance(data, dict) else "?"
    deadline = time.monotonic() + EXIT_AFTER_SHUTDOWN
    while qemu.poll() is None:
        if time.monotonic() > deadline:
            proc.stop(qemu, grace=5.0)
            return CheckResult("clean shutdown", False, f"QEMU still running {EXIT_AFTER_SHUTDOWN:.0f} s after SHUTDOWN")
        await asyncio.sleep(0.1)
    if reason != "guest-shutdown":
        # e.g. guest-reset: the guest rebooted (stopped by -no-reboot) instead of powering off.
        return CheckResult("clean shutdown", False, f"QEMU stopped for {reason}, not a guest power-off")
    return CheckResult("clean shutdown", True, reason)


async def _disconnect(client: QMPClient) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), timeout=5)
    except (Exception, asyncio.TimeoutError):
        pass  # QEMU closed the socket first (it powered off): nothing left to release


class _Session:
    """One QEMU run: QMP, the wait for SSH, the checks and the power-off."""

    def __init__(self, spec: BootSpec, accel_name: str, qemu: subprocess.Popen[bytes], sock_path: Path,
                 port: int, start: float) -> None:
        self.spec = spec
        self.accel_name = accel_name
        self.qemu = qemu
        self.sock_path = sock_path
        self.port = port
        self.start = start
        self.serial_log = spec.log_dir / "serial.log"
        self.ssh_log = spec.log_dir / "ssh.log"

    def ssh(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        return ssh_run(self.port, self.spec, command, timeout=timeout, logfile=self.ssh_log)

    def run(self, work: Callable[[_Session], list[CheckResult]] | None = None) -> BootReport:
        """Boot, run ``work`` once SSH answers (default: the spec's checks), power off."""
        # One event loop for the whole run, entered only for QMP work; the SSH
        # waits stay synchronous so Ctrl-C reaches proc's cleanup directly.
        with asyncio.Runner() as runner:
            deadline = min(self.start + QMP_CONNECT_TIMEOUT, self.start + self.spec.boot_timeout)
            client = runner.run(_connect_qmp(self.sock_path, self.qemu, deadline))
            try:
                status = runner.run(_query_status(client))
                if status != "running":
                    raise BootError(f"QEMU reports the VM as {status!r}, not running", file=self.spec.image)
                boot_seconds = self.wait_for_ssh()
                checks = self.checks() if work is None else work(self)
                stop_start = time.monotonic()
                checks.append(runner.run(_powerdown(client, self.qemu, self.spec.shutdown_timeout)))
                shutdown_seconds = time.monotonic() - stop_start
            finally:
                runner.run(_disconnect(client))
        return BootReport(all(c.ok for c in checks), tuple(checks), boot_seconds, shutdown_seconds,
                          self.serial_log, self.accel_name, self.spec.image)

    def wait_for_ssh(self) -> float:
        """Seconds from QEMU's start to the first successful login; BootError if it never comes."""
        deadline = self.start + self.spec.boot_timeout
        console = _ConsoleWatch(self.serial_log)
        stall = watchdog.Watchdog(label="verify", timeout=self.spec.stall_seconds(), console=self.serial_log,
                                  accelerator=self.accel_name, vm="the boot-test VM")
        last_error = "sshd never answered"
        refused_since: float | None = None
        while True:
            if self.qemu.poll() is not None:
                raise _QemuExited(self.qemu.returncode, "")
            fatal = console.fatal_line()
            if fatal:
                raise BootError(f"the guest cannot boot: {fatal!r} on its console; serial log: {self.serial_log}",
                                file=self.spec.image)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BootError(
                    f"the guest did not answer SSH within {self.spec.boot_timeout:.0f} s "
                    f"(last: {_one_line(last_error, 200)}); serial log: {self.serial_log}",
                    file=self.spec.image, hint=f"read {self.serial_log} and {self.ssh_log}")
            stalled = stall()
            if stalled:
                raise Stalled(stalled)
            if ssh_banner(self.port, timeout=min(5.0, remaining)):
                stall.progress()
                rc, out = self.ssh("true", timeout=min(SSH_ATTEMPT_TIMEOUT, max(remaining, 1.0)))
                if rc == 0:
                    return time.monotonic() - self.start
                last_error = out.strip() or f"ssh exit {rc}"
                # sshd is up but refuses the key: waiting longer will not change that.
                if "Permission denied" in out:
                    refused_since = refused_since or time.monotonic()
                    if time.monotonic() - refused_since > KEY_REFUSED_GRACE:
                        raise BootError(
                            f"sshd refuses key {self.spec.key} for user {self.spec.user}: {_one_line(out, 200)}",
                            file=self.spec.image, hint="check the key and the user's authorized_keys")
                else:
                    refused_since = None
            time.sleep(min(2.0, max(deadline - time.monotonic(), 0.0)))

    def checks(self) -> list[CheckResult]:
        results = [self.system_state()]
        for unit in self.spec.units:
            results.append(self.check(f"unit {unit} active", f"systemctl is-active {shlex.quote(unit)}"))
        for command in self.spec.checks:
            results.append(self.check(f"check: {command}", command))
        return results

    def system_state(self) -> CheckResult:
        """``running`` passes; ``degraded`` (or anything else) fails, naming the failed units."""
        rc, out = self.ssh("systemctl is-system-running --wait")
        state = out.strip().splitlines()[-1] if out.strip() else f"exit {rc}"
        if rc == 0 and state == "running":
            return CheckResult("system running", True, state)
        _, failed = self.ssh("systemctl --failed --no-legend --plain")
        units = [line.split()[0] for line in failed.splitlines() if line.strip()]
        return CheckResult("system running", False,
                           f"state {state}; failed units: {', '.join(units) or 'none listed'}")

    def check(self, name: str, command: str) -> CheckResult:
        rc, out = self.ssh(command)
        if rc == 0:
            return CheckResult(name, True)
        return CheckResult(name, False, f"exit {rc}: {_output_tail(out)}" if out.strip() else f"exit {rc}")


def _check_inputs(spec: BootSpec) -> None:
    for label, path in (("image", spec.image), ("kernel", spec.kernel), ("initrd", spec.initrd),
                        ("SSH key", spec.key), *(("SSH key", k) for k in spec.extra_keys)):
        if path is not None and not path.is_file():
            raise BootError(f"{label} not found", file=path, hint="build it first")
    # ssh ignores a private key other users can read, which would look like a refused login.
    for key in (spec.key, *spec.extra_keys):
        if stat.S_IMODE(key.stat().st_mode) & 0o077:
            raise BootError("SSH key is readable by other users; ssh would ignore it", file=key,
                            hint=f"chmod 600 {key}")


def boot_test(spec: BootSpec, work: Callable[[_Session], list[CheckResult]] | None = None) -> BootReport:
    """Boot ``spec.image`` (on a snapshot unless ``spec.snapshot`` is off), run the checks (or
    ``work``, given the session once SSH answers: ``session.port``, ``session.ssh()``), power off.

    Returns a report (ok=False on failed checks); raises BootError when the
    image cannot be booted far enough to log in.
    """
    _check_inputs(spec)
    accel_name = accel.choose(spec.accelerator,
                              spec.probe or accel.ProbeSpec(kernels=(spec.kernel,) if spec.kernel else ()))
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    serial_log = spec.log_dir / "serial.log"
    qemu_log = spec.log_dir / "qemu.log"
    for log_file in (serial_log, qemu_log, spec.log_dir / "ssh.log"):
        log_file.write_text("")
    # mkdtemp makes a 0700 folder: only we can reach the QMP socket inside.
    private = Path(tempfile.mkdtemp(prefix="vaultdoit-qmp-"))
    try:
        sock_path = private / "qmp.sock"
        for attempt in (1, 2):
            port = free_port()
            offset = qemu_log.stat().st_size
            start = time.monotonic()
            try:
                argv = qemu_argv(spec, accel_name, port, sock_path, serial_log)
                with proc.spawn(argv, logfile=qemu_log) as qemu:
                    return _Session(spec, accel_name, qemu, sock_path, port, start).run(work)
            except _QemuExited as exc:
                said = _read_from(qemu_log, offset)
                # Another program took the port between free_port() and QEMU's bind: once more.
                if PORT_IN_USE in said and attempt == 1:
                    sock_path.unlink(missing_ok=True)
                    continue
                lines = [ln for ln in said.splitlines() if not ln.startswith("+ ")][-proc.TAIL_LINES:]
                raise BootError(
                    f"QEMU exited ({proc.describe_exit(exc.returncode)}) before the guest answered SSH; "
                    f"last lines of {qemu_log}:\n" + ("\n".join(lines) or "(empty)")
                    + f"\nserial log: {serial_log}",
                    file=spec.image) from None
        raise AssertionError("unreachable")
    finally:
        shutil.rmtree(private, ignore_errors=True)
