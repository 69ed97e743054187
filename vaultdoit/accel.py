"""Pick the QEMU accelerator: KVM when it really runs guest code here, else TCG.

Opening /dev/kvm, or even creating a vCPU, is not proof: on some hosts
(nested virtualisation) KVM creates the vCPU and then never gets a Linux
kernel as far as its serial console, and a build waits for SSH until Packer's
timeout. So ``auto`` boots a real kernel under KVM with no root device and
waits for the line the kernel prints when it has initialised everything and
looks for its root file system ("VFS: Unable to mount root fs"). The kernel is
one the stages boot anyway (passed in as candidates), else one fetched once
through apt into ``cache/probe/``. The verdict is kept in
``cache/probe/accel.json`` until the host reboots (or QEMU changes), so later
runs cost nothing; nothing probes unless a task needs a VM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vaultdoit import proc
from vaultdoit.errors import CommandFailed, ConfigError, VaultError
from vaultdoit.buildspec import ProbeSpec

VALID = ("auto", "kvm", "tcg")
KVM_DEVICE = Path("/dev/kvm")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
VERDICT_FILE = "accel.json"
# The mini kernel reaches the line in 2-3 s under TCG on a loaded 2-core host, and KVM
# is several times faster: ten seconds leave room for load and keep a fallback short.
PROBE_TIMEOUT = 10.0
# Printed only once the kernel has run its initcalls and looks for userspace: with no
# root device it panics on the first; the others appear when it does find one.
READY_LINES = ("VFS: Unable to mount root fs", "Run /init as init process", "No working init found")
# panic=-1 reboots at once and -no-reboot turns that reboot into QEMU's exit.
PROBE_APPEND = "console=ttyS0 panic=-1"
# CPU models the build's VMs use under KVM: -cpu host (the boot test) and QEMU's
# default (Packer's QEMU builder passes no -cpu). Hosts differ in which of them fail.
KVM_CPUS: tuple[str | None, ...] = ("host", None)
# Distribution packages whose dependency is a bootable kernel image (Debian, then Ubuntu).
KERNEL_PACKAGES = ("linux-image-cloud-amd64", "linux-image-amd64", "linux-image-virtual", "linux-image-generic")


@dataclass(frozen=True)
class Verdict:
    """The accelerator to use and why."""

    accelerator: str  # "kvm" or "tcg"
    reason: str
    probed: bool = True  # False when vault.toml forced the accelerator
    lasting: bool = True  # holds until the host reboots (False: a passing failure, e.g. no kernel yet)

    def line(self) -> str:
        """One line for the user, e.g. ``tcg (KVM does not run guest code here: ...)``."""
        return f"{self.accelerator} ({self.reason})"


@dataclass(frozen=True)
class BootResult:
    """Outcome of one probe boot."""

    ok: bool
    detail: str
    seconds: float


_QEMU_PREFIX = re.compile(r"^qemu-system-\S+: (error: )?")


def _qemu_error(text: str) -> str:
    """QEMU's own complaint from its stderr (the line that says what failed)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("+ ")]
    for line in lines:
        if "error" in line.lower() or "failed" in line.lower():
            return _QEMU_PREFIX.sub("", line)
    return _QEMU_PREFIX.sub("", lines[-1]) if lines else "no message"


def _cpu_label(cpu: str | None) -> str:
    return f"cpu {cpu}" if cpu else "QEMU's default cpu"


def probe_argv(accel: str, kernel: Path, serial: Path, *, cpu: str | None = None,
               qemu: str = "qemu-system-x86_64") -> list[str]:
    """QEMU booting ``kernel`` with no disk, its console in ``serial``, quitting on panic."""
    argv = [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-accel", accel, "-machine", "pc", "-m", "256", "-smp", "1",
            "-serial", f"file:{serial}", "-kernel", str(kernel), "-append", PROBE_APPEND]
    if cpu:
        argv += ["-cpu", cpu]
    return argv


def _ready(serial: Path) -> str | None:
    try:
        text = serial.read_text(errors="replace")
    except OSError:
        return None
    return next((marker for marker in READY_LINES if marker in text), None)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:160] if lines else ""


def boot_probe(accel: str, kernel: Path, log_dir: Path, *, timeout: float = PROBE_TIMEOUT,
               cpu: str | None = None) -> BootResult:
    """Boot ``kernel`` under ``accel`` until it prints a READY_LINES line, within ``timeout`` s.

    Positive under TCG on any host; under KVM only where KVM runs guest code.
    The console and QEMU's messages stay in ``log_dir`` (probe-<accel>-<cpu>.*).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    name = f"probe-{accel}-{cpu or 'default'}"
    serial, qemu_log = log_dir / f"{name}.serial.log", log_dir / f"{name}.log"
    for path in (serial, qemu_log):
        path.write_text("")
    start = time.monotonic()
    what = f"under {accel.upper()} ({_cpu_label(cpu)})"
    with proc.spawn(probe_argv(accel, kernel, serial, cpu=cpu), logfile=qemu_log) as qemu:
        while True:
            marker = _ready(serial)
            if marker:
                return BootResult(True, f"a Linux kernel booted {what} to {marker!r} "
                                        f"in {time.monotonic() - start:.1f} s", time.monotonic() - start)
            if qemu.poll() is not None:
                if _ready(serial):  # the line and QEMU's exit came together
                    continue
                seconds = time.monotonic() - start
                if qemu.returncode != 0:
                    said = _qemu_error(qemu_log.read_text(errors="replace"))
                    return BootResult(False, f"QEMU failed {what} ({proc.describe_exit(qemu.returncode)}): "
                                             f"{said}", seconds)
                last = _last_line(serial)
                return BootResult(False, f"the guest reset {what} before the kernel finished booting"
                                         + (f" (last console line: {last!r})" if last else ""), seconds)
            if time.monotonic() - start > timeout:
                last = _last_line(serial)
                if not last:
                    detail = f"a Linux kernel printed nothing on its serial console {what} within {timeout:.0f} s"
                else:
                    detail = (f"a Linux kernel stopped {what} after {last!r} "
                              f"(no {READY_LINES[0]!r} within {timeout:.0f} s)")
                return BootResult(False, detail, time.monotonic() - start)
            time.sleep(0.05)


def vcpu_probe(log_dir: Path) -> str | None:
    """Create a KVM vCPU with ``-cpu host`` and quit (0.1 s); None if that works, else why not."""
    # Catches hosts whose KVM fails on the first MSR write without needing a kernel.
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-machine", "pc", "-cpu", "host", "-nodefaults",
            "-no-user-config", "-display", "none", "-monitor", "stdio", "-S"]
    logfile = log_dir / "probe-kvm-vcpu.log"
    logfile.unlink(missing_ok=True)
    try:
        proc.run(argv, stdin=b"quit\n", capture=True, logfile=logfile, timeout=20)
    except subprocess.TimeoutExpired:
        return "QEMU did not answer within 20 s while creating a KVM vCPU"
    except CommandFailed as exc:
        return f"QEMU cannot create a KVM vCPU ({proc.describe_exit(exc.returncode)}): {_qemu_error(exc.tail)}"
    return None


def _kernel_package() -> str:
    """The versioned kernel package a kernel meta-package of this distribution points at."""
    for meta in KERNEL_PACKAGES:
        code, out = proc.check_output(["apt-cache", "depends", meta], timeout=60)
        if code != 0:
            continue
        for line in out.splitlines():
            match = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
            if match:
                return match.group(1)
    raise VaultError("no kernel package found in the host's apt sources to probe KVM with",
                     hint='set accelerator = "kvm" or "tcg" in vault.toml to skip the probe')


def fetch_kernel(dest: Path) -> Path:
    """A distribution kernel in ``dest`` (``dest/vmlinuz``), fetched once through apt."""
    kernel = dest / "vmlinuz"
    if kernel.is_file():
        return kernel
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".kernel-", dir=dest))
    logfile = dest / "fetch-kernel.log"
    try:
        package = _kernel_package()
        proc.run(["apt-get", "download", package], cwd=work, logfile=logfile, timeout=600)
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise VaultError(f"apt-get download {package} left no package", file=logfile)
        proc.run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")], logfile=logfile, timeout=300)
        images = sorted((work / "root" / "boot").glob("vmlinuz-*"))
        if not images:
            raise VaultError(f"{package} holds no /boot/vmlinuz-*", file=logfile)
        os.replace(images[0], kernel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return kernel


def probe_kernel(spec: ProbeSpec, scratch: Path) -> Path:
    """The first candidate kernel that exists, else one fetched into the cache (or ``scratch``)."""
    for candidate in spec.kernels:
        if candidate.is_file():
            return candidate
    return fetch_kernel(spec.cache_dir or scratch)


def detect(spec: ProbeSpec = ProbeSpec(), *, timeout: float = PROBE_TIMEOUT) -> Verdict:
    """Run the probes (no cache): /dev/kvm, a vCPU, then a kernel boot per KVM cpu model."""
    if not KVM_DEVICE.exists():
        return Verdict("tcg", f"{KVM_DEVICE} does not exist: no KVM on this host")
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return Verdict("tcg", f"{KVM_DEVICE} is not readable and writable for this user "
                              "(add the user to the kvm group to use KVM)")
    scratch = Path(tempfile.mkdtemp(prefix="vaultdoit-probe-"))
    log_dir = spec.cache_dir or scratch
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        failed = vcpu_probe(log_dir)
        if failed:
            return Verdict("tcg", f"KVM is not usable here: {failed}")
        try:
            kernel = probe_kernel(spec, scratch)
        except (VaultError, OSError, subprocess.TimeoutExpired) as exc:
            return Verdict("tcg", f"KVM creates vCPUs but no kernel could be had to check that it runs "
                                  f"guest code ({exc}); set accelerator = \"kvm\" to use it unchecked",
                           lasting=False)
        results = []
        for cpu in KVM_CPUS:
            result = boot_probe("kvm", kernel, log_dir, timeout=timeout, cpu=cpu)
            if not result.ok:
                return Verdict("tcg", f"KVM does not run guest code here: {result.detail}")
            results.append(result)
        return Verdict("kvm", results[-1].detail)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _host_key() -> dict[str, str]:
    """What a cached verdict is valid for: this boot of the host and this QEMU binary."""
    try:
        boot_id = BOOT_ID.read_text().strip()
    except OSError:
        boot_id = ""
    qemu = proc.find_tool("qemu-system-x86_64")
    st = os.stat(qemu)
    return {"boot_id": boot_id, "qemu": f"{qemu}:{st.st_size}:{st.st_mtime_ns}"}


def _load(path: Path, key: dict[str, str]) -> Verdict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not key["boot_id"] or any(data.get(k) != v for k, v in key.items()):
        return None
    if data.get("accelerator") not in ("kvm", "tcg") or not isinstance(data.get("reason"), str):
        return None
    return Verdict(data["accelerator"], data["reason"])


def _save(path: Path, key: dict[str, str], verdict: Verdict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = {**key, "accelerator": verdict.accelerator, "reason": verdict.reason}
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


_lock = threading.Lock()
_verdicts: dict[Path | None, Verdict] = {}
_announced: set[str] = set()


def _announce(verdict: Verdict, cached: Path | None) -> None:
    """Say once per process why auto fell back to TCG."""
    if verdict.accelerator != "tcg" or verdict.reason in _announced:
        return
    _announced.add(verdict.reason)
    kept = f"; kept for this boot in {cached}" if cached else ""
    sys.stderr.write(f"vaultdoit: accelerator tcg: {verdict.reason}{kept} "
                     '(accelerator = "kvm" or "tcg" in vault.toml skips the probe)\n')
    sys.stderr.flush()


def verdict(setting: str = "auto", probe: ProbeSpec | None = None, *, announce: bool = True) -> Verdict:
    """Resolve the ``accelerator`` setting to a Verdict; ``auto`` probes once per host boot.

    With ``announce``, a fall-back to TCG is explained in one line on stderr (once per process).
    """
    if setting not in VALID:
        raise ConfigError(f"accelerator must be one of {', '.join(VALID)}, not {setting!r}",
                          file="vault.toml", hint='set accelerator = "auto"')
    if setting != "auto":
        return Verdict(setting, "set in vault.toml", probed=False)
    spec = probe or ProbeSpec()
    with _lock:  # parallel stages (doit -n) probe once
        found = _verdicts.get(spec.cache_dir)
        if found is None:
            key = _host_key()
            path = spec.cache_dir / VERDICT_FILE if spec.cache_dir else None
            found = _load(path, key) if path else None
            if found is None:
                found = detect(spec)
                if path and found.lasting:
                    _save(path, key, found)
            _verdicts[spec.cache_dir] = found
        if announce:
            _announce(found, spec.cache_dir / VERDICT_FILE if spec.cache_dir else None)
    return found


def choose(setting: str = "auto", probe: ProbeSpec | None = None) -> str:
    """Resolve the ``accelerator`` setting (auto/kvm/tcg) to ``kvm`` or ``tcg``."""
    return verdict(setting, probe).accelerator


def forget() -> None:
    """Drop the in-process verdicts (tests; a long-lived process after a QEMU upgrade)."""
    with _lock:
        _verdicts.clear()
        _announced.clear()
