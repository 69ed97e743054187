"""``vaultdoit doctor``: one line per host check, exit 1 when a build cannot work."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, VENV_BIN
from vaultdoit import doctor, ports
from vaultdoit.doctor import Check, Context

TOOLS = [t.name for t in doctor.TOOLS]
needs_tools = pytest.mark.skipif(any(shutil.which(t, path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}") is None
                                     for t in TOOLS),
                                 reason="needs every build tool (scripts/setup installs them)")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The repository's own project files, with the APT proxy on a port nobody holds."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("packer", "ansible", "python"):
        shutil.copytree(REPO / name, root / name)
    port = ports.free_port_from(3300)
    text = (REPO / "vault.toml").read_text().replace('accelerator = "auto"',
                                                     f'accelerator = "auto"\napt_proxy_port = {port}')
    (root / "vault.toml").write_text(text)
    return root


def doctor_cli(root: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([str(VENV_BIN / "vaultdoit"), "-C", str(root), "doctor", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def lines_by_check(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        for name in [*TOOLS, "accelerator", "space in build/", "space in cache/", "write project",
                     "write build/", "write cache/", "apt proxy port", "project"]:
            if line[6:].startswith(name + " "):
                found[name] = line
    return found


@needs_tools
def test_doctor_passes_on_this_machine(project: Path):
    result = doctor_cli(project)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = lines_by_check(result.stdout)
    for tool in TOOLS:
        assert lines[tool].startswith("ok    "), lines[tool]
        assert any(ch.isdigit() for ch in lines[tool]), lines[tool]  # a version
    assert lines["packer"].split()[2][0].isdigit()
    assert lines["accelerator"].split()[2] in ("kvm", "tcg,", "tcg")
    for name in ("space in build/", "space in cache/", "write project", "write build/", "write cache/",
                 "apt proxy port"):
        assert name in lines
    assert "is free" in lines["apt proxy port"]
    assert result.stdout.rstrip().endswith("a build can run here")
    assert "Traceback" not in result.stderr

    data = json.loads(doctor_cli(project, "--json").stdout)
    assert data["ok"] is True
    assert {c["name"] for c in data["checks"]} >= set(TOOLS) | {"accelerator", "apt proxy port"}


@needs_tools
def test_doctor_without_packer_fails_and_names_the_package(project: Path, tmp_path: Path):
    """Every tool but packer on PATH: exit 1 and the line says what to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    search = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    for tool in [*TOOLS, "dpkg-query", "apt-cache", "apt-get", "dpkg-deb"]:
        found = shutil.which(tool, path=search)
        if tool != "packer" and found:
            (bin_dir / tool).symlink_to(found)
    result = doctor_cli(project, path=str(bin_dir))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = lines_by_check(result.stdout)
    assert lines["packer"] == "FAIL  packer              not installed (fix: install packer)"
    assert lines["qemu-img"].startswith("ok    ")
    assert result.stdout.rstrip().endswith("1 problem(s) stop a build here")
    assert "Traceback" not in result.stderr
    assert json.loads(doctor_cli(project, "--json", path=str(bin_dir)).stdout)["ok"] is False


def test_outside_a_project_the_host_checks_still_run(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(doctor, "check_tool", lambda tool, ctx: Check(tool.name, "ok", "1.0"))
    monkeypatch.setattr(doctor, "check_accelerator", lambda ctx: Check("accelerator", "ok", "tcg"))
    checks = doctor.run(doctor.context(None))
    names = [c.name for c in checks]
    assert names[0] == "project" and checks[0].status == "warn"
    assert "space in build/" not in names and "apt proxy port" in names
    assert not doctor.failed(checks)


def test_a_folder_that_cannot_be_written_fails():
    # /proc takes no new files, even from root (unlike a chmod, which root ignores).
    check = doctor.check_writable("write build/", Path("/proc/vaultdoit-build"))
    assert check.status == "fail" and check.detail.startswith("cannot write in /proc: ")


def test_free_space_thresholds(monkeypatch, tmp_path: Path):
    for free, status in ((200 * 2**20, "fail"), (5 * 2**30, "warn"), (50 * 2**30, "ok")):
        monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path, free=free: shutil._ntuple_diskusage(0, 0, free))
        assert doctor.check_space("space in build/", tmp_path / "build").status == status


def test_a_port_held_by_another_program_is_named_with_a_free_one():
    port = ports.free_port_from(3400)
    assert port is not None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        held = ports.holder(port)
        assert held is not None and held.pid == os.getpid()
        if shutil.which("apt-cacher-ng") is None:
            pytest.skip("the managed proxy is used only with apt-cacher-ng installed")
        check = doctor.check_apt_port(Context(apt_proxy_port=port))
    assert check.status == "fail"
    assert check.detail.startswith(f"127.0.0.1:{port} is held by {held.name} (pid {os.getpid()}: ")
    assert check.hint == f"set apt_proxy_port = {ports.free_port_from(port + 1)} in vault.toml"
    assert ports.holder(port) is None


def fake_proc(tmp_path: Path, port: int, command: list[str]) -> Path:
    """A /proc with one apt-cacher-ng listening on ``port``."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (proc / "net/tcp").write_text(header + f"   0: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 "
                                           "00:00000000 00000000   109        0 4242 1 0 100 0 0 10 0\n")
    (proc / "net/tcp6").write_text(header)
    (proc / "321/fd").mkdir(parents=True)
    (proc / "321/fd/7").symlink_to("socket:[4242]")
    (proc / "321/comm").write_text("apt-cacher-ng\n")
    (proc / "321/cmdline").write_bytes(b"\0".join(c.encode() for c in command) + b"\0")
    return proc


@pytest.mark.skipif(shutil.which("apt-cacher-ng") is None, reason="needs apt-cacher-ng")
def test_the_distributions_apt_cacher_ng_on_the_port_is_named(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(ports, "PROC", fake_proc(tmp_path, 3142, ["/usr/sbin/apt-cacher-ng",
                                                                    "SocketPath=/run/apt-cacher-ng/socket", "-c",
                                                                    "/etc/apt-cacher-ng", "ForeGround=1"]))
    check = doctor.check_apt_port(Context(apt_proxy_port=3142, cache_dir=tmp_path / "cache"))
    assert check.status == "fail"
    assert check.detail == (
        "127.0.0.1:3142 is held by another apt-cacher-ng, probably the distribution's service: apt-cacher-ng "
        "(pid 321: /usr/sbin/apt-cacher-ng SocketPath=/run/apt-cacher-ng/socket -c /etc/apt-cacher-ng "
        "ForeGround=1)")
    assert check.hint == ('set apt_proxy_port = 3143 in vault.toml; or use it with apt_proxy = '
                          '"http://127.0.0.1:3142"; or stop it: systemctl disable --now apt-cacher-ng')


@pytest.mark.skipif(shutil.which("apt-cacher-ng") is None, reason="needs apt-cacher-ng")
def test_the_projects_own_apt_cacher_ng_is_fine(tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(ports, "PROC", fake_proc(tmp_path, 3142, ["/usr/sbin/apt-cacher-ng", "-c",
                                                                    str(cache / "apt/conf")]))
    check = doctor.check_apt_port(Context(apt_proxy_port=3142, cache_dir=cache))
    assert check == Check("apt proxy port", "ok", "127.0.0.1:3142 is this project's apt-cacher-ng (pid 321)")


def test_forced_kvm_on_a_host_where_it_does_not_work_fails(monkeypatch):
    from vaultdoit import accel

    monkeypatch.setattr(accel, "verdict", lambda *a, **k: accel.Verdict("tcg", "KVM is not usable here: x"))
    check = doctor.check_accelerator(Context(accelerator="kvm"))
    assert check.status == "fail" and check.hint == 'set accelerator = "auto" or "tcg"'
    assert doctor.check_accelerator(Context()).status == "warn"
