"""Boot test: QEMU and SSH command lines, the report, and real QEMU runs.

Fast tests need nothing. ``integration`` tests need qemu-system-x86_64; those
that boot a real guest also need ``VAULTDOIT_TEST_IMAGE_DIR``, a folder with
image.qcow2 (a root file system on /dev/vda), vmlinuz, initrd.img and key
(the private SSH key of user ``vault``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vaultdoit import vm
from vaultdoit.errors import BootError
from vaultdoit.vm import BootReport, BootSpec, CheckResult, free_port, qemu_argv, ssh_argv

SPEC = BootSpec(image=Path("/i/img.qcow2"), key=Path("/k/key"), log_dir=Path("/l"),
                kernel=Path("/i/vmlinuz"), initrd=Path("/i/initrd.img"))

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None,
                                reason="needs qemu-system-x86_64 and qemu-img")


def opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- no VM ---------------------------------------------------------------------------------


def test_qemu_argv_never_writes_the_image_and_binds_loopback():
    argv = qemu_argv(SPEC, "tcg", 2222, Path("/s/qmp.sock"), Path("/l/serial.log"))
    assert argv[0] == "qemu-system-x86_64"
    assert opt(argv, "-drive") == "file=/i/img.qcow2,if=virtio,format=qcow2,snapshot=on"
    assert opt(argv, "-netdev") == "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22"
    assert opt(argv, "-device") == "virtio-net-pci,netdev=n0"
    assert opt(argv, "-qmp") == "unix:/s/qmp.sock,server=on,wait=off"
    assert opt(argv, "-serial") == "file:/l/serial.log"
    assert opt(argv, "-accel") == "tcg" and opt(argv, "-cpu") == "max"
    assert opt(argv, "-m") == "1024" and opt(argv, "-smp") == "2"
    assert {"-nodefaults", "-no-user-config", "-no-reboot"} <= set(argv) and opt(argv, "-display") == "none"
    assert opt(argv, "-kernel") == "/i/vmlinuz" and opt(argv, "-initrd") == "/i/initrd.img"
    assert opt(argv, "-append") == "root=/dev/vda rw console=ttyS0"


def test_qemu_argv_kvm_no_kernel_and_commas():
    spec = BootSpec(image=Path("/i/a,b.qcow2"), key=Path("/k"), log_dir=Path("/l"), memory=2048, cpus=4)
    argv = qemu_argv(spec, "kvm", 2200, Path("/s,x/q.sock"), Path("/l/s.log"))
    assert opt(argv, "-accel") == "kvm" and opt(argv, "-cpu") == "host"
    assert opt(argv, "-m") == "2048" and opt(argv, "-smp") == "4"
    assert "-kernel" not in argv and "-initrd" not in argv and "-append" not in argv
    # QEMU option syntax: a comma inside a value is doubled.
    assert opt(argv, "-drive").startswith("file=/i/a,,b.qcow2,if=virtio")
    assert opt(argv, "-qmp") == "unix:/s,,x/q.sock,server=on,wait=off"


def test_spec_is_keyword_only_with_defaults():
    with pytest.raises(TypeError):
        BootSpec(Path("/i"), Path("/k"), Path("/l"))
    assert (SPEC.user, SPEC.accelerator, SPEC.boot_timeout, SPEC.shutdown_timeout) == ("vault", "auto", 600.0, 120.0)
    assert SPEC.units == () and SPEC.checks == ()


def test_ssh_argv_uses_only_the_key_and_no_known_hosts():
    argv = ssh_argv(SPEC, 2222, "test -d /etc")
    assert argv[:5] == ["ssh", "-i", "/k/key", "-p", "2222"]
    for option in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes",
                   "ConnectTimeout=10", "IdentitiesOnly=yes"):
        assert option in argv
    assert argv[-2:] == ["vault@127.0.0.1", "test -d /etc"]


def test_ssh_run_reports_a_timeout_as_exit_124(monkeypatch):
    def slow(argv, *, timeout, logfile=None):
        raise subprocess.TimeoutExpired(argv, timeout)

    monkeypatch.setattr(vm.proc, "check_output", slow)
    assert vm.ssh_run(2222, SPEC, "sleep 1000", timeout=3) == (124, "timed out after 3 s")


def test_report_renders_one_line_per_check_and_is_json_ready():
    report = BootReport(False, (CheckResult("system running", True, "running"),
                                CheckResult("unit x active", False, "exit 3: inactive"),
                                CheckResult("check: false", False, "exit 1: line one\nline two")),
                        30.54, 4.2, Path("/l/serial.log"), "tcg", Path("/i/img.qcow2"))
    lines = report.render().splitlines()
    assert lines[0] == "PASS  system running"
    assert lines[1] == "FAIL  unit x active: exit 3: inactive"
    assert lines[2] == "FAIL  check: false: exit 1: line one | line two"
    assert lines[3] == "boot 30.5 s, shutdown 4.2 s (tcg); serial log: /l/serial.log"
    assert lines[4] == "boot test FAILED" and len(lines) == 5
    data = json.loads(json.dumps(report.to_dict()))
    assert data["checks"][1] == {"name": "unit x active", "ok": False, "detail": "exit 3: inactive"}
    assert data["serial_log"] == "/l/serial.log" and data["image"] == "/i/img.qcow2"
    assert data["boot_seconds"] == 30.5 and not data["ok"]
    passed = BootReport(True, (CheckResult("system running", True),), 1, 2, Path("/s"), "kvm")
    assert passed.render().endswith("boot test passed")


def test_free_port_is_free_on_loopback():
    port = free_port()
    assert 1024 <= port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_console_watch_spots_a_panic_even_across_partial_writes(tmp_path: Path):
    log = tmp_path / "serial.log"
    log.write_text("[    0.1] Linux version 6.1\n[    2.0] Kernel pan")
    watch = vm._ConsoleWatch(log)
    assert watch.fatal_line() is None
    with log.open("a") as fh:
        fh.write("ic - not syncing: VFS: Unable to mount root fs\n")
    assert watch.fatal_line() == "[    2.0] Kernel panic - not syncing: VFS: Unable to mount root fs"
    assert watch.fatal_line() is None  # already reported lines are not read again


def test_missing_files_and_an_open_key_fail_before_qemu_starts(tmp_path: Path):
    image = tmp_path / "img.qcow2"
    key = tmp_path / "key"
    with pytest.raises(BootError, match="image not found"):
        vm.boot_test(BootSpec(image=image, key=key, log_dir=tmp_path / "logs"))
    image.write_bytes(b"")
    key.write_text("k")
    key.chmod(0o644)
    with pytest.raises(BootError, match="chmod 600"):
        vm.boot_test(BootSpec(image=image, key=key, log_dir=tmp_path / "logs"))


# --- real QEMU, no guest OS needed ---------------------------------------------------------


def qemu_running(marker: str) -> list[str]:
    """Command lines of live processes mentioning ``marker`` (a path unique to one test)."""
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "qemu-system" in line]


def blank_spec(tmp_path: Path, **kw) -> BootSpec:
    """An empty disk and no kernel: QEMU runs but nothing ever answers SSH."""
    image = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    key = tmp_path / "key"
    key.write_text("not a key\n")
    key.chmod(0o600)
    return BootSpec(image=image, key=key, log_dir=tmp_path / "logs", memory=128, cpus=1,
                    accelerator="tcg", **kw)


@pytest.mark.integration
@needs_qemu
def test_a_guest_that_never_answers_fails_at_the_boot_timeout(tmp_path: Path):
    spec = blank_spec(tmp_path, boot_timeout=6)
    start = time.monotonic()
    with pytest.raises(BootError) as info:
        vm.boot_test(spec)
    elapsed = time.monotonic() - start
    assert "did not answer SSH within 6 s" in str(info.value)
    assert str(spec.log_dir / "serial.log") in str(info.value)
    assert elapsed < 6 + 15, elapsed  # the timeout plus QEMU's stop, never a hang
    assert qemu_running(str(spec.log_dir)) == []


@pytest.mark.integration
@needs_qemu
def test_an_unreadable_image_fails_at_once_with_qemus_words(tmp_path: Path):
    spec = blank_spec(tmp_path)
    with spec.image.open("r+b") as fh:
        fh.write(os.urandom(2**20))
    start = time.monotonic()
    with pytest.raises(BootError) as info:
        vm.boot_test(spec)
    text = str(info.value)
    assert "QEMU exited (exit code 1)" in text and "Image is not in qcow2 format" in text
    assert time.monotonic() - start < 30
    assert qemu_running(str(spec.log_dir)) == []


@pytest.mark.integration
@needs_qemu
def test_a_port_taken_before_qemu_binds_it_is_retried_once(tmp_path: Path, monkeypatch):
    spec = blank_spec(tmp_path, boot_timeout=4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [taken.getsockname()[1]]
        real_free_port = vm.free_port
        monkeypatch.setattr(vm, "free_port", lambda: ports.pop() if ports else real_free_port())
        with pytest.raises(BootError) as info:
            vm.boot_test(spec)
    # The second QEMU started and ran until the boot timeout: the race cost nothing.
    assert "did not answer SSH within 4 s" in str(info.value)
    qemu_log = (spec.log_dir / "qemu.log").read_text()
    assert qemu_log.count("Could not set up host forwarding rule") == 1
    assert qemu_log.count("+ qemu-system-x86_64") == 2


@pytest.mark.integration
@needs_qemu
def test_ctrl_c_leaves_no_qemu_and_no_qmp_folder(tmp_path: Path):
    spec = blank_spec(tmp_path, boot_timeout=300)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from vaultdoit import vm
        spec = vm.BootSpec(image=Path({str(spec.image)!r}), key=Path({str(spec.key)!r}),
                           log_dir=Path({str(spec.log_dir)!r}), accelerator="tcg", memory=128, cpus=1)
        vm.boot_test(spec)
    """)
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the QMP folder lands where we can look for it
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not qemu_running(str(spec.log_dir)):
            assert time.monotonic() < deadline, "QEMU never started"
            time.sleep(0.2)
        time.sleep(2)  # well inside the wait for SSH
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert "KeyboardInterrupt" in err
    assert qemu_running(str(spec.log_dir)) == []
    assert list(tmp_path.glob("vaultdoit-qmp-*")) == []


# --- real guest: needs VAULTDOIT_TEST_IMAGE_DIR --------------------------------------------


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> dict[str, Path]:
    """The test image's files; the key is copied with mode 0600 as ssh requires."""
    folder = os.environ.get("VAULTDOIT_TEST_IMAGE_DIR")
    if not folder:
        pytest.skip("set VAULTDOIT_TEST_IMAGE_DIR to a folder with image.qcow2, vmlinuz, initrd.img and key")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64")
    files = {name: Path(folder) / name for name in ("image.qcow2", "vmlinuz", "initrd.img", "key")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        pytest.skip(f"test image files missing: {', '.join(missing)}")
    key = tmp_path_factory.mktemp("key") / "key"
    shutil.copyfile(files["key"], key)
    key.chmod(0o600)
    return {**files, "key": key}


def guest_spec(guest: dict[str, Path], log_dir: Path, **kw) -> BootSpec:
    return BootSpec(image=kw.pop("image", guest["image.qcow2"]), kernel=guest["vmlinuz"],
                    initrd=guest["initrd.img"], key=guest["key"], log_dir=log_dir, **kw)


def identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


@pytest.mark.integration
def test_good_image_boots_passes_and_powers_off(guest, tmp_path: Path):
    before = identity(guest["image.qcow2"])
    spec = guest_spec(guest, tmp_path / "logs", units=("ssh.service",), checks=("test -d /etc", "sudo -n true"))
    report = vm.boot_test(spec)
    print(report.render())
    assert report.ok, report.render()
    assert [c.name for c in report.checks] == ["system running", "unit ssh.service active",
                                               "check: test -d /etc", "check: sudo -n true", "clean shutdown"]
    assert 0 < report.boot_seconds < spec.boot_timeout and 0 < report.shutdown_seconds < spec.shutdown_timeout
    assert "Linux version" in report.serial_log.read_text(errors="replace")
    assert identity(guest["image.qcow2"]) == before  # snapshot=on: the image is never written
    assert qemu_running(str(spec.log_dir)) == []


@pytest.mark.integration
def test_failing_checks_are_reported_not_raised(guest, tmp_path: Path):
    # One boot for every kind of failure (a TCG boot costs ~40 s): a unit that fails at
    # boot (degraded), a missing unit, a failing command, and a guest that ignores the
    # power button (logind masked), which must be stopped after shutdown_timeout.
    spec = guest_spec(guest, tmp_path / "logs", units=("nonexistent.service",),
                      append=vm.DEFAULT_APPEND + " systemd.wants=user-runtime-dir@99999.service",
                      checks=("test -d /etc", "echo why >&2; false",
                              "sudo -n systemctl mask --runtime --now systemd-logind.service"),
                      shutdown_timeout=10)
    report = vm.boot_test(spec)
    print(report.render())
    assert not report.ok
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert set(failed) == {"system running", "unit nonexistent.service active", "check: echo why >&2; false",
                           "clean shutdown"}
    assert failed["system running"] == "state degraded; failed units: user-runtime-dir@99999.service"
    assert "inactive" in failed["unit nonexistent.service active"]
    assert failed["check: echo why >&2; false"] == "exit 1: why"
    assert "no SHUTDOWN event within 10 s" in failed["clean shutdown"]
    assert 10 <= report.shutdown_seconds < 30
    assert "FAIL  unit nonexistent.service active: exit 3: inactive" in report.render()
    assert qemu_running(str(spec.log_dir)) == []


@pytest.mark.integration
def test_corrupted_image_fails_clearly(guest, tmp_path: Path):
    broken = tmp_path / "broken.qcow2"
    shutil.copyfile(guest["image.qcow2"], broken)
    with broken.open("r+b") as fh:
        fh.write(os.urandom(2**20))
    spec = guest_spec(guest, tmp_path / "logs", image=broken, boot_timeout=120)
    start = time.monotonic()
    with pytest.raises(BootError) as info:
        vm.boot_test(spec)
    assert "QEMU exited" in str(info.value) and "not in qcow2 format" in str(info.value)
    assert time.monotonic() - start < 30
    assert qemu_running(str(spec.log_dir)) == []
