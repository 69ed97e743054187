"""Boot test of a built image: QEMU with a QMP socket, checks over SSH, clean power-off.

The image is opened with ``snapshot=on``, so a test never writes it. QEMU is
started through proc.spawn and never outlives ``boot_test`` (also on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import shlex
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from vaultdoit import accel, proc
from vaultdoit.errors import BootError


@dataclass(frozen=True)
class BootSpec:
    """What to boot and what to check."""

    image: Path
    key: Path
    log_dir: Path
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = "root=/dev/vda rw console=ttyS0"
    accelerator: str = "auto"
    memory: int = 1024
    cpus: int = 2
    user: str = "vault"
    units: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    boot_timeout: float = 600.0
    shutdown_timeout: float = 120.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class BootReport:
    ok: bool
    checks: tuple[CheckResult, ...]
    boot_seconds: float
    shutdown_seconds: float
    serial_log: Path
    accelerator: str
    image: Path = field(default=Path())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["serial_log"] = str(self.serial_log)
        data["image"] = str(self.image)
        data["checks"] = [asdict(c) for c in self.checks]
        return data

    def render(self) -> str:
        lines = [f"{'PASS' if c.ok else 'FAIL'}  {c.name}" + (f"\n        {c.detail}" if c.detail and not c.ok else "")
                 for c in self.checks]
        lines.append(f"boot {self.boot_seconds:.1f} s, shutdown {self.shutdown_seconds:.1f} s "
                     f"({self.accelerator}); serial log: {self.serial_log}")
        lines.append("boot test " + ("passed" if self.ok else "FAILED"))
        return "\n".join(lines)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def qemu_argv(spec: BootSpec, accel_name: str, port: int, qmp_socket: Path, serial_log: Path) -> list[str]:
    """The QEMU command line of a boot test."""
    argv = [
        "qemu-system-x86_64",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-accel", accel_name, "-cpu", "host" if accel_name == "kvm" else "max",
        "-m", str(spec.memory), "-smp", str(spec.cpus),
        # snapshot=on: writes go to a throwaway overlay, never to the image.
        "-drive", f"file={spec.image},if=virtio,format=qcow2,snapshot=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", f"file:{serial_log}",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
    ]
    if spec.kernel is not None:
        argv += ["-kernel", str(spec.kernel), "-append", spec.append]
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    return argv


def ssh_argv(spec: BootSpec, port: int, command: str) -> list[str]:
    return [
        "ssh", "-i", str(spec.key), "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
        f"{spec.user}@127.0.0.1", command,
    ]


def _banner(port: int) -> bool:
    """The forwarded port accepts TCP before the guest is up: wait for sshd's banner."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(5)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    return proc.tail(path, lines) if path.exists() else ""


async def _qmp(sock_path: Path, qemu: Any, deadline: float) -> QMPClient:
    client = QMPClient("vaultdoit-verify")
    while True:
        if qemu.poll() is not None:
            raise BootError(f"QEMU exited with {proc.describe_exit(qemu.returncode)} before it was up")
        if sock_path.exists():
            try:
                await client.connect(str(sock_path))
                return client
            except Exception:  # not listening yet
                pass
        if time.monotonic() > deadline:
            raise BootError("QEMU's QMP socket never answered")
        await asyncio.sleep(0.1)


async def _run(spec: BootSpec, accel_name: str, qemu: Any, sock_path: Path, port: int,
               serial_log: Path, ssh_log: Path) -> BootReport:
    start = time.monotonic()
    client = await _qmp(sock_path, qemu, start + 30)
    checks: list[CheckResult] = []
    shutdown_seconds = 0.0
    try:
        status = await client.execute("query-status")
        if not isinstance(status, dict) or status.get("status") != "running":
            raise BootError(f"VM is not running after start: {status}")
        deadline = start + spec.boot_timeout
        loop = asyncio.get_running_loop()
        while True:
            if qemu.poll() is not None:
                raise BootError(f"QEMU exited with {proc.describe_exit(qemu.returncode)} during boot",
                                file=serial_log, hint="see the serial log")
            if await loop.run_in_executor(None, _banner, port):
                rc, _out = await loop.run_in_executor(
                    None, lambda: proc.check_output(ssh_argv(spec, port, "true"), timeout=30, logfile=ssh_log))
                if rc == 0:
                    break
            if time.monotonic() > deadline:
                raise BootError(f"no SSH login within {spec.boot_timeout:.0f} s", file=serial_log,
                                hint="see the serial log; the access key or sshd may be wrong")
            await asyncio.sleep(2)
        boot_seconds = time.monotonic() - start

        def remote(command: str, timeout: float = 300) -> tuple[int, str]:
            return proc.check_output(ssh_argv(spec, port, command), timeout=timeout, logfile=ssh_log)

        def run_check(name: str, command: str) -> CheckResult:
            rc, out = remote(command)
            return CheckResult(name, rc == 0, "" if rc == 0 else f"exit {rc}: {out.strip()[-500:]}")

        rc, out = await loop.run_in_executor(None, lambda: remote("systemctl is-system-running --wait"))
        state = out.strip().splitlines()[-1] if out.strip() else ""
        if state == "running":
            checks.append(CheckResult("system running", True))
        else:
            _, failed = await loop.run_in_executor(None, lambda: remote("systemctl --failed --no-legend --plain"))
            units = ", ".join(line.split()[0] for line in failed.splitlines() if line.strip()) or "none listed"
            checks.append(CheckResult("system running", False, f"state {state or rc}; failed units: {units}"))
        for unit in spec.units:
            checks.append(await loop.run_in_executor(
                None, run_check, f"unit {unit} active", f"systemctl is-active {shlex.quote(unit)}"))
        for command in spec.checks:
            checks.append(await loop.run_in_executor(None, run_check, f"check: {command}", command))

        stop_start = time.monotonic()
        try:
            with client.listener("SHUTDOWN") as listener:
                await client.execute("system_powerdown")
                await asyncio.wait_for(listener.get(), timeout=spec.shutdown_timeout)
            await loop.run_in_executor(None, lambda: qemu.wait(timeout=30))
            checks.append(CheckResult("clean shutdown", True))
        except (asyncio.TimeoutError, Exception) as exc:  # the hard kill happens in spawn's cleanup
            checks.append(CheckResult("clean shutdown", False, f"no SHUTDOWN event: {exc!r}"))
        shutdown_seconds = time.monotonic() - stop_start
    finally:
        try:
            await client.disconnect()
        except Exception:  # QEMU closed the socket first (it powered off): nothing to do
            pass
    return BootReport(all(c.ok for c in checks), tuple(checks), boot_seconds, shutdown_seconds,
                      serial_log, accel_name, spec.image)


def boot_test(spec: BootSpec) -> BootReport:
    """Boot ``spec.image`` on a snapshot, run the checks, power off; raise BootError if it cannot boot."""
    if not spec.image.is_file():
        raise BootError("image not found", file=spec.image, hint="build it first: doit final_image")
    accel_name = accel.choose(spec.accelerator)
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    serial_log = spec.log_dir / "serial.log"
    qemu_log = spec.log_dir / "qemu.log"
    ssh_log = spec.log_dir / "ssh.log"
    for log_file in (serial_log, qemu_log, ssh_log):
        log_file.write_text("")
    with tempfile.TemporaryDirectory(prefix="vaultdoit-qmp-") as private:  # 0700: only we reach QMP
        sock_path = Path(private) / "qmp.sock"
        port = free_port()
        with proc.spawn(qemu_argv(spec, accel_name, port, sock_path, serial_log), logfile=qemu_log) as qemu:
            try:
                return asyncio.run(_run(spec, accel_name, qemu, sock_path, port, serial_log, ssh_log))
            except BootError as err:
                tail = _tail(qemu_log)
                if tail and not err.hint:
                    err.hint = f"qemu said: {tail.splitlines()[-1]}"
                raise
