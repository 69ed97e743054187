"""End to end: the mini profile built for real from nothing (mmdebstrap, Packer,
Ansible, QEMU), booted and checked over SSH, then the incremental cases.

Slow (about 20 minutes under TCG on 2 cores); CI runs it every time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, ran_tasks, run_doit

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("packer", "qemu-system-x86_64", "mmdebstrap")),
                       reason="needs packer, qemu-system-x86 and mmdebstrap (scripts/setup installs them)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap --mode=root needs root"),
]

PROJECT_FILES = ("dodo.py", "vault.toml", "packer", "ansible", "python")
STAGES = ("base", "drivers", "frameworks", "final")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e") / "project"
    root.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        else:
            shutil.copy2(src, root / name)
    return root


def doit(root: Path, *args: str) -> set[str]:
    return ran_tasks(run_doit(root, "--reporter=json", *args).stdout)


def stage_image(root: Path, name: str) -> Path:
    return root / f"build/mini/stages/{name}/{name}.qcow2"


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def boot(root: Path, checks: list[str], tag: str):
    from vaultdoit.vm import BootSpec, boot_test

    final = root / "build/final"
    spec = BootSpec(
        image=final / "vault-mini.qcow2",
        kernel=final / "vault-mini.vmlinuz",
        initrd=final / "vault-mini.initrd.img",
        user="vault",
        key=root / "build/keys/access_ed25519",
        units=("vault-monitor.service",),
        checks=tuple(checks),
        log_dir=root / f"build/logs/e2e-{tag}",
    )
    report = boot_test(spec)
    print(report.render())
    return report


def test_full_build_boot_and_incremental(project: Path):
    root = project
    # 1. From nothing: every task runs and the final image is standalone.
    assert doit(root, "final_image") == {"keys", "cache:wheels", *(f"stage:{s}" for s in STAGES), "final_image"}
    final = root / "build/final/vault-mini.qcow2"
    from vaultdoit import qemu_img

    info = qemu_img.info(final)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    qemu_img.check(final)
    assert qemu_img.backing_of(stage_image(root, "drivers")) == "../base/base.qcow2"

    build_pub = (root / "build/keys/build_ed25519.pub").read_text().split()[1]
    access_pub = (root / "build/keys/access_ed25519.pub").read_text().split()[1]
    report = boot(root, [
        # each stage's work
        "test -f /etc/vault/stages/drivers && command -v lspci",
        "grep -q 'options virtio_net' /etc/modprobe.d/vault-driver.conf",
        "/opt/vault/venv/bin/python -c 'import prometheus_client, packaging'",
        "grep -q '^prometheus_client==0.26.0' /etc/vault/pip-freeze.txt",
        "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:9101/metrics')\"",
        "test -f /usr/share/doc/vault-mini/README.md && grep -q openssh-server /etc/vault/dpkg-packages.txt",
        # cleanup: no build key, no password, no proxy, no wheelhouse
        f"! grep -q '{build_pub}' ~/.ssh/authorized_keys",
        f"grep -q '{access_pub}' ~/.ssh/authorized_keys",
        "test -z \"$(sudo -n awk -F: '$2 !~ /^[!*]/ {print $1}' /etc/shadow)\"",
        "! sudo -n grep -rqi proxy /etc/apt/apt.conf.d/ && test ! -e /etc/pip.conf",
        "test ! -e /var/tmp/vault-wheelhouse && test ! -e /home/vault/.ansible",
    ], "full")
    assert report.ok, report.render()

    images = {s: identity(stage_image(root, s)) for s in STAGES}

    # 2. No-op.
    assert doit(root, "final_image") == set()
    assert {s: identity(stage_image(root, s)) for s in STAGES} == images

    # 3. The monitoring script (final stage only).
    script = root / "ansible/roles/monitoring/files/vault-monitor.py"
    script.write_text(script.read_text() + "\n# e2e: monitoring change\n")
    assert doit(root, "final_image") == {"stage:final", "final_image"}
    for s in ("base", "drivers", "frameworks"):
        assert identity(stage_image(root, s)) == images[s], f"{s} must not be rewritten"
    assert identity(stage_image(root, "final")) != images["final"]

    # 4. The drivers role: drivers, frameworks and final rebuild, never the base.
    images = {s: identity(stage_image(root, s)) for s in STAGES}
    defaults = root / "ansible/roles/driver_config/defaults/main.yml"
    defaults.write_text(defaults.read_text().replace('driver_options: "debug=0"', 'driver_options: "debug=1"'))
    assert doit(root, "final_image") == {"stage:drivers", "stage:frameworks", "stage:final", "final_image"}
    assert identity(stage_image(root, "base")) == images["base"]
    for s in ("drivers", "frameworks", "final"):
        assert identity(stage_image(root, s)) != images[s]

    # 5. The rebuilt image carries both changes and still passes.
    report = boot(root, [
        "grep -q 'debug=1' /etc/modprobe.d/vault-driver.conf",
        "grep -q 'e2e: monitoring change' /opt/vault/bin/vault-monitor",
    ], "incremental")
    assert report.ok, report.render()
