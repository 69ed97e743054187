"""Boot-test plumbing that needs no VM: QEMU and SSH command lines, the report.

The real boots (a good image passes, a missing unit fails, a corrupted image
fails clearly) run in test_e2e.py on the image it builds.
"""

from __future__ import annotations

import socket
from pathlib import Path

from vaultdoit.vm import BootReport, BootSpec, CheckResult, free_port, qemu_argv, ssh_argv

SPEC = BootSpec(image=Path("/i/img.qcow2"), key=Path("/k/key"), log_dir=Path("/l"),
                kernel=Path("/i/vmlinuz"), initrd=Path("/i/initrd.img"))


def test_qemu_argv_never_writes_the_image_and_binds_loopback():
    argv = qemu_argv(SPEC, "tcg", 2222, Path("/s/qmp.sock"), Path("/l/serial.log"))
    assert "file=/i/img.qcow2,if=virtio,format=qcow2,snapshot=on" in argv
    assert "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    assert argv[argv.index("-qmp") + 1] == "unix:/s/qmp.sock,server=on,wait=off"
    assert argv[argv.index("-cpu") + 1] == "max"
    assert argv[argv.index("-kernel") + 1] == "/i/vmlinuz" and "-initrd" in argv
    kvm = qemu_argv(SPEC, "kvm", 2222, Path("/s/q"), Path("/l/s"))
    assert kvm[kvm.index("-cpu") + 1] == "host"


def test_ssh_argv_uses_the_key_and_no_known_hosts():
    argv = ssh_argv(SPEC, 2222, "true")
    assert argv[:5] == ["ssh", "-i", "/k/key", "-p", "2222"]
    assert "UserKnownHostsFile=/dev/null" in argv and argv[-2:] == ["vault@127.0.0.1", "true"]


def test_report_renders_one_line_per_check():
    report = BootReport(False, (CheckResult("system running", True), CheckResult("unit x active", False, "inactive")),
                        30.5, 4.2, Path("/l/serial.log"), "tcg", Path("/i/img.qcow2"))
    text = report.render()
    assert "PASS  system running" in text and "FAIL  unit x active" in text and "inactive" in text
    assert "boot 30.5 s, shutdown 4.2 s (tcg)" in text and text.endswith("boot test FAILED")
    assert report.to_dict()["checks"][1] == {"name": "unit x active", "ok": False, "detail": "inactive"}


def test_free_port_is_free():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
