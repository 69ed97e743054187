"""The accelerator probe: a real kernel boot decides, once per host boot.

Fast tests replace the probe itself; ``integration`` tests boot a real Linux
kernel with QEMU: the one in ``VAULTDOIT_TEST_KERNEL``, else the mini base's
if this checkout has built it, else one fetched once through apt into pytest's
cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_doit
from vaultdoit import accel
from vaultdoit.errors import ConfigError, VaultError

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")


@pytest.fixture(autouse=True)
def fresh_verdicts():
    accel.forget()
    yield
    accel.forget()


@pytest.fixture
def counted_detect(monkeypatch, tmp_path: Path):
    """detect() replaced by a counter, the host's boot id by a file the test controls."""
    calls: list[accel.ProbeSpec] = []
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    monkeypatch.setattr(accel, "BOOT_ID", boot_id)
    monkeypatch.setattr(accel.proc, "find_tool", lambda name: sys.executable)

    def detect(spec: accel.ProbeSpec = accel.ProbeSpec(), **_: object) -> accel.Verdict:
        calls.append(spec)
        return accel.Verdict("tcg", "KVM is not usable here: test")

    monkeypatch.setattr(accel, "detect", detect)
    return calls, boot_id


def test_probe_argv_boots_the_kernel_without_a_disk_and_quits_on_panic():
    argv = accel.probe_argv("kvm", Path("/k/vmlinuz"), Path("/l/serial.log"), cpu="host")
    assert argv[argv.index("-kernel") + 1] == "/k/vmlinuz"
    assert argv[argv.index("-serial") + 1] == "file:/l/serial.log"
    assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1"
    assert argv[argv.index("-accel") + 1] == "kvm" and argv[argv.index("-cpu") + 1] == "host"
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert not {"-drive", "-hda", "-initrd", "-cdrom"} & set(argv)
    assert "-cpu" not in accel.probe_argv("kvm", Path("/k"), Path("/s"))  # QEMU's default model, as Packer's


def test_forced_accelerator_never_probes(counted_detect):
    calls, _ = counted_detect
    assert accel.choose("tcg") == "tcg" and accel.choose("kvm") == "kvm"
    assert accel.verdict("kvm") == accel.Verdict("kvm", "set in vault.toml", probed=False)
    assert calls == []
    with pytest.raises(ConfigError, match="accelerator must be one of auto, kvm, tcg, not 'gpu'"):
        accel.choose("gpu")


def test_verdict_is_kept_per_host_boot(counted_detect, tmp_path: Path, capsys):
    calls, boot_id = counted_detect
    spec = accel.ProbeSpec(cache_dir=tmp_path / "cache" / "probe")
    assert accel.choose("auto", spec) == "tcg"
    assert accel.choose("auto", spec) == "tcg"
    assert len(calls) == 1
    saved = json.loads((tmp_path / "cache/probe/accel.json").read_text())
    assert saved["boot_id"] == "boot-1" and saved["accelerator"] == "tcg"
    # One line says why, once per process.
    err = capsys.readouterr().err
    assert err.count("vaultdoit: accelerator tcg: KVM is not usable here: test") == 1
    assert str(tmp_path / "cache/probe/accel.json") in err

    accel.forget()  # a new process: the file answers
    assert accel.choose("auto", spec) == "tcg" and len(calls) == 1

    accel.forget()
    boot_id.write_text("boot-2\n")  # the host rebooted: probe again
    assert accel.choose("auto", spec) == "tcg" and len(calls) == 2
    assert json.loads((tmp_path / "cache/probe/accel.json").read_text())["boot_id"] == "boot-2"


def test_a_damaged_verdict_file_is_probed_again(counted_detect, tmp_path: Path):
    calls, _ = counted_detect
    spec = accel.ProbeSpec(cache_dir=tmp_path)
    (tmp_path / "accel.json").write_text("{not json")
    assert accel.choose("auto", spec) == "tcg" and len(calls) == 1
    assert json.loads((tmp_path / "accel.json").read_text())["accelerator"] == "tcg"


def test_without_dev_kvm_nothing_runs(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(accel, "KVM_DEVICE", tmp_path / "kvm")
    monkeypatch.setattr(accel.proc, "run", lambda *a, **k: pytest.fail("no program may run"))
    found = accel.detect(accel.ProbeSpec(cache_dir=tmp_path))
    assert found == accel.Verdict("tcg", f"{tmp_path / 'kvm'} does not exist: no KVM on this host")


def test_no_kernel_to_boot_is_tcg_but_not_kept(monkeypatch, tmp_path: Path):
    """KVM creates vCPUs but no kernel can be had: TCG for now, probed again next time."""
    device = tmp_path / "kvm"
    device.write_text("")
    monkeypatch.setattr(accel, "KVM_DEVICE", device)
    monkeypatch.setattr(accel, "vcpu_probe", lambda log_dir: None)

    def no_kernel(dest: Path) -> Path:
        raise VaultError("no kernel package found")

    monkeypatch.setattr(accel, "fetch_kernel", no_kernel)
    found = accel.detect(accel.ProbeSpec(kernels=(tmp_path / "missing-vmlinuz",), cache_dir=tmp_path))
    assert found.accelerator == "tcg" and not found.lasting
    assert "no kernel could be had" in found.reason and "no kernel package found" in found.reason


def test_planned_kernels_come_from_the_stages():
    """The mini profile's stages boot the base's kernel: the probe boots that one, no download."""
    from vaultdoit.plan import load_project
    from vaultdoit.tasks.specs import probe_spec

    project = load_project(REPO)
    spec = probe_spec(project)
    assert spec.kernels[0] == REPO / "build/mini/stages/base/vmlinuz"
    assert spec.cache_dir == REPO / "cache" / "probe"
    final = probe_spec(project, (REPO / "build/final/vault-mini.vmlinuz",))
    assert final.kernels[:2] == (REPO / "build/final/vault-mini.vmlinuz", REPO / "build/mini/stages/base/vmlinuz")


def test_a_no_op_build_does_not_probe(project_copy, tmp_path: Path):
    """The probe runs inside the stage actions only: nothing to build, nothing probed."""
    from conftest import TESTS
    from vaultdoit.plan import load_project

    root = project_copy("team")
    project = load_project(root)
    plan = {s.name: {"output": str(s.output), "parent": str(project.parent(s).output) if s.parent else None}
            for s in project.stages}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {"PATH": f"{TESTS / 'fakes'}{os.pathsep}{os.environ['PATH']}",
           "FAKE_PACKER_PLAN": str(tmp_path / "plan.json"), "FAKE_PACKER_LOG": str(tmp_path / "packer.log")}
    verdict_file = root / "cache/probe/accel.json"
    run_doit(root, "final_image", env=env)
    assert verdict_file.is_file()  # the stages asked for the accelerator
    verdict_file.unlink()
    run_doit(root, "final_image", env=env)
    assert not verdict_file.exists()


# --- real QEMU --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(request, tmp_path_factory) -> Path:
    """A Linux kernel to boot: the test's, the mini base's, or one fetched once through apt."""
    given = os.environ.get("VAULTDOIT_TEST_KERNEL")
    if given:
        return Path(given)
    built = REPO / "build/mini/stages/base/vmlinuz"
    if built.is_file():
        return built
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs a kernel: set VAULTDOIT_TEST_KERNEL, or apt-get and dpkg-deb to fetch one")
    # pytest's cache keeps it between runs; without the cache plugin (-p no:cacheprovider), this run's.
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("vaultdoit-probe-kernel") if cache is not None else tmp_path_factory.mktemp("kernel")
    return accel.fetch_kernel(Path(folder))


@pytest.mark.integration
@needs_qemu
def test_the_probe_boots_a_real_kernel_under_tcg(kernel: Path, tmp_path: Path):
    start = time.monotonic()
    result = accel.boot_probe("tcg", kernel, tmp_path, cpu="max", timeout=120)
    assert result.ok, result.detail
    assert "booted under TCG (cpu max) to 'VFS: Unable to mount root fs'" in result.detail
    assert "VFS: Unable to mount root fs" in (tmp_path / "probe-tcg-max.serial.log").read_text()
    assert time.monotonic() - start < 120


def _kvm_expectation() -> str | None:
    """'broken', 'working' or None (cannot tell) for this host's KVM."""
    given = os.environ.get("VAULTDOIT_TEST_KVM")
    if given in ("broken", "working"):
        return given
    # PVM (KVM for guests without hardware virtualisation) is the kind whose vCPUs never
    # run a Linux kernel to its console: the hosts of issue 9.
    return "broken" if Path("/sys/module/kvm_pvm").exists() else None


@pytest.mark.integration
@needs_qemu
@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm")
def test_the_same_probe_under_kvm_matches_the_host(kernel: Path, tmp_path: Path):
    expected = _kvm_expectation()
    if expected is None:
        pytest.skip("cannot tell whether KVM works here (set VAULTDOIT_TEST_KVM=broken or working)")
    start = time.monotonic()
    found = accel.detect(accel.ProbeSpec(kernels=(kernel,), cache_dir=tmp_path))
    elapsed = time.monotonic() - start
    if expected == "working":
        assert found.accelerator == "kvm", found.reason
        assert "booted under KVM" in found.reason
    else:
        assert found.accelerator == "tcg", found.reason
        assert found.reason.startswith(("KVM is not usable here", "KVM does not run guest code here"))
    # Within a few seconds: a probe per KVM cpu model, each bounded by PROBE_TIMEOUT.
    assert elapsed < len(accel.KVM_CPUS) * accel.PROBE_TIMEOUT + 10, elapsed


@pytest.mark.integration
@needs_qemu
@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm")
def test_a_kvm_guest_that_never_reaches_the_console_is_negative(kernel: Path, tmp_path: Path):
    """The kind of host where a vCPU is created but the kernel never prints: QEMU's default cpu here."""
    if _kvm_expectation() != "broken":
        pytest.skip("needs a host whose KVM does not run guest code")
    start = time.monotonic()
    result = accel.boot_probe("kvm", kernel, tmp_path, cpu=None, timeout=4)
    assert not result.ok
    assert "under KVM (QEMU's default cpu)" in result.detail
    assert time.monotonic() - start < 4 + 10


@pytest.mark.integration
def test_the_fetched_kernel_is_kept(kernel: Path, monkeypatch):
    """A second fetch finds the kernel in the cache folder and runs nothing."""
    if kernel.name != "vmlinuz" or kernel.parent.name != "vaultdoit-probe-kernel":
        pytest.skip("the test kernel was not fetched through apt")
    monkeypatch.setattr(accel.proc, "run", lambda *a, **k: pytest.fail("nothing may run"))
    assert accel.fetch_kernel(kernel.parent) == kernel
    with kernel.open("rb") as fh:
        fh.seek(0x202)
        assert fh.read(4) == b"HdrS"  # the x86 boot protocol's header: a bootable bzImage
