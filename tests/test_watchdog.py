"""The stall watchdog: a VM with no sign of life is stopped with one line naming its console log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO, TESTS
from vaultdoit import proc, vm, watchdog
from vaultdoit.errors import Stalled
from vaultdoit.watchdog import Watchdog

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None,
                                reason="needs qemu-system-x86_64 and qemu-img")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def qemu_running(marker: str, wait: float = 10.0) -> list[str]:
    """QEMU processes whose command line holds ``marker``, once they had ``wait`` s to go."""
    deadline = time.monotonic() + wait
    while True:
        found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
        running = [line for line in found.splitlines() if "qemu-system" in line]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


# --- reading the templates ------------------------------------------------------------------


def test_the_mini_stages_console_log_and_timeout_come_from_qemuargs():
    from vaultdoit.plan import load_project

    project = load_project(REPO)
    drivers = project.stage("drivers")
    assert drivers.source is not None
    # Packer fills {{ .Name }} with the vm_name before it starts QEMU.
    assert watchdog.console_log(drivers.source.attrs, REPO) == REPO / "build/logs/mini/serial-drivers.qcow2.log"
    assert watchdog.automatic_timeout(drivers.source.attrs) == watchdog.DIRECT_BOOT


@pytest.mark.parametrize(("attrs", "expected"), [
    ({"qemuargs": [["-serial", "file:{{ .OutputDir }}/console.log"]], "vm_name": "x.qcow2",
      "output_directory": "out"}, "out/console.log"),
    ({"qemuargs": [["-serial", "file:logs/{{ .HTTPIP }}.log"]], "vm_name": "x"}, None),  # only Packer knows
    ({"qemuargs": [["-serial", "stdio"]], "vm_name": "x"}, None),
    ({"qemuargs": [["-m", "1024"]], "vm_name": "x"}, None),
    ({}, None),
])
def test_console_log_is_known_only_when_it_is_a_file(attrs, expected):
    found = watchdog.console_log(attrs, Path("/p"))
    assert found == (Path("/p") / expected if expected else None)


def test_automatic_timeouts_leave_installers_time():
    assert watchdog.automatic_timeout({"disk_image": True, "qemuargs": [["-kernel", "k"]]}) == 300
    assert watchdog.automatic_timeout({"disk_image": True}) == 900  # its own boot loader
    assert watchdog.automatic_timeout({"iso_url": "debian.iso"}) == 1800  # an installer
    assert watchdog.timeout_for(0, 300) == 300 and watchdog.timeout_for(None, 300) == 300
    assert watchdog.timeout_for(45, 300) == 45


def test_stall_timeout_setting_is_read_per_stage_then_project(tmp_path: Path):
    """vault.toml's stall_timeout reaches each stage's build and the boot test."""
    from vaultdoit.plan import load_project
    from vaultdoit.tasks.final import verify_task
    from vaultdoit.tasks.specs import stage_build

    root = tmp_path / "project"
    for name in ("packer", "ansible", "python"):
        shutil.copytree(REPO / name, root / name)
    text = (REPO / "vault.toml").read_text()
    (root / "vault.toml").write_text(text.replace('accelerator = "auto"', 'accelerator = "auto"\nstall_timeout = 120')
                                     + "\n[profiles.mini.stages.drivers]\nstall_timeout = 600\n")
    project = load_project(root)
    assert stage_build(project, project.stage("drivers")).stall_timeout == 600.0
    assert stage_build(project, project.stage("final:demo")).stall_timeout == 120.0
    spec = verify_task(project)["actions"][0][1][0].make()
    assert spec.stall_timeout == 120.0 and spec.stall_seconds() == 120.0
    (root / "vault.toml").write_text(text)
    project = load_project(root)
    assert stage_build(project, project.stage("drivers")).stall_timeout == 0.0  # automatic: 300 s for mini


# --- the rule ------------------------------------------------------------------------------


def test_console_output_packer_output_and_disk_writes_are_signs_of_life(tmp_path: Path):
    console, output, disk = tmp_path / "serial.log", tmp_path / "packer.log", tmp_path / "disk.qcow2"
    output.write_text("")
    clock = Clock()
    dog = Watchdog(label="stage:x", timeout=60, console=console, output=output, disks=[disk], clock=clock)
    for step in range(4):
        clock.now += 50
        assert dog() is None
        if step == 0:
            console.write_text("Linux version 6.1\n")
        elif step == 1:
            with output.open("a") as fh:
                fh.write("==> qemu.x: Provisioning with Ansible...\n")
        elif step == 2:
            disk.write_bytes(b"qcow")
    clock.now += 50
    assert dog() is None  # the disk appeared 50 s ago
    clock.now += 11
    assert dog() is not None


def test_waiting_for_ssh_is_not_progress(tmp_path: Path):
    output = tmp_path / "packer.log"
    output.write_text("")
    clock = Clock()
    dog = Watchdog(label="stage:x", timeout=30, output=output, clock=clock, root=tmp_path)
    for _ in range(3):
        with output.open("a") as fh:
            fh.write("2026-01-01T00:00:00Z: ==> qemu.x: Waiting for SSH to become available...\n")
        clock.now += 11
    message = dog()
    assert message == (
        "stage:x: the build VM showed no progress for 30 s (no console log to watch, Packer printed "
        "nothing but 'Waiting for SSH' (log: packer.log)); the guest may be stuck at a prompt or in a task "
        "that hangs (fix: read the console log; raise stall_timeout if the step is only slow)")


def test_the_message_names_the_console_log_and_the_accelerator(tmp_path: Path):
    console = tmp_path / "build/logs/mini/serial-drivers.qcow2.log"
    clock = Clock()
    dog = Watchdog(label="stage:drivers", timeout=300, console=console, accelerator="kvm", root=tmp_path,
                   clock=clock)
    clock.now += 299
    assert dog() is None
    clock.now += 2
    assert dog() == (
        "stage:drivers: the build VM printed nothing on its console for 300 s (serial log: "
        "build/logs/mini/serial-drivers.qcow2.log); the accelerator may not run guest code here "
        '(fix: set accelerator = "tcg" in vault.toml, or raise stall_timeout)')
    console.parent.mkdir(parents=True)
    console.write_text("SeaBIOS\n")
    assert dog() is None
    clock.now += 301
    assert "printed nothing new on its console for 300 s" in (dog() or "")


# --- real programs -------------------------------------------------------------------------


@pytest.mark.integration
@needs_qemu
def test_a_vm_that_never_prints_is_stopped_with_the_message(tmp_path: Path):
    """QEMU with no kernel and no disk prints nothing on its serial port: stopped within the time."""
    serial = tmp_path / "serial.log"
    dog = Watchdog(label="stage:silent", timeout=3, console=serial, root=tmp_path)
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg",
            "-m", "64", "-serial", f"file:{serial}", "-name", f"silent-{tmp_path.name}"]
    start = time.monotonic()
    with pytest.raises(Stalled) as info:
        proc.run(argv, logfile=tmp_path / "qemu.log", watch=dog, watch_interval=dog.interval)
    elapsed = time.monotonic() - start
    assert str(info.value).startswith(
        "stage:silent: the build VM printed nothing on its console for 3 s (serial log: serial.log); ")
    # Stopped at the stall time, not at some other limit (generous: CI hosts are shared).
    assert 3 <= elapsed < 3 + 30, elapsed
    assert serial.read_text() == ""
    assert qemu_running(f"silent-{tmp_path.name}") == []


@pytest.mark.integration
@needs_qemu
def test_the_boot_test_stops_a_silent_vm_at_the_stall_timeout(tmp_path: Path):
    image = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    key = tmp_path / "key"
    key.write_text("not a key\n")
    key.chmod(0o600)
    spec = vm.BootSpec(image=image, key=key, log_dir=tmp_path / "logs", memory=128, cpus=1, accelerator="tcg",
                       boot_timeout=300, stall_timeout=3)
    start = time.monotonic()
    with pytest.raises(Stalled) as info:
        vm.boot_test(spec)
    elapsed = time.monotonic() - start
    assert str(info.value).startswith(
        f"verify: the boot-test VM printed nothing on its console for 3 s (serial log: {spec.log_dir / 'serial.log'})")
    assert elapsed < 3 + 20, elapsed  # far from the 300 s boot timeout
    assert qemu_running(str(spec.log_dir)) == []


def test_automatic_boot_test_stall_timeout():
    spec = vm.BootSpec(image=Path("/i"), key=Path("/k"), log_dir=Path("/l"))
    assert spec.stall_seconds() == watchdog.DISK_IMAGE  # no kernel: its boot loader may print elsewhere
    assert vm.BootSpec(image=Path("/i"), key=Path("/k"), log_dir=Path("/l"),
                       kernel=Path("/v")).stall_seconds() == watchdog.DIRECT_BOOT
    assert vm.BootSpec(image=Path("/i"), key=Path("/k"), log_dir=Path("/l"), kernel=Path("/v"),
                       stall_timeout=42).stall_seconds() == 42


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_stage_whose_vm_never_boots_is_stopped_and_the_previous_image_kept(project_copy, tmp_path: Path,
                                                                              monkeypatch):
    """Packer waiting for SSH forever: the stage fails with the stall line, its last image is untouched."""
    from doit.exceptions import TaskFailed

    from vaultdoit.plan import load_project
    from vaultdoit.tasks.stages import stage_task

    root = project_copy("team")
    project = load_project(root)
    plan = {s.name: {"output": str(s.output), "parent": str(project.parent(s).output) if s.parent else None}
            for s in project.stages}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    monkeypatch.setenv("PATH", f"{TESTS / 'fakes'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PACKER_PLAN", str(tmp_path / "plan.json"))
    monkeypatch.setenv("FAKE_PACKER_LOG", str(tmp_path / "packer.log"))
    stage = project.stage("base")
    func, (later,) = stage_task(project, stage)["actions"][0]
    build = later.make()
    assert build.stall_timeout == 0.0  # automatic unless vault.toml says otherwise
    assert func(build) is None  # a first, good build
    before = stage.output.read_bytes()

    monkeypatch.setenv("FAKE_PACKER_STALL", "base")
    start = time.monotonic()
    failed = func(replace(build, stall_timeout=2))
    elapsed = time.monotonic() - start
    assert isinstance(failed, TaskFailed)
    assert str(failed.message).startswith(
        "stage:base: the build VM showed no progress for 2 s (no console log to watch, Packer printed nothing "
        "but 'Waiting for SSH' (log: build/logs/stage-base.log), its disk did not change); ")
    assert elapsed < 2 + 25, elapsed  # the timeout, then Packer's stop
    assert stage.output.read_bytes() == before
    assert "Waiting for SSH" in (root / "build/logs/stage-base.log").read_text()
