"""Get into an image: `vaultdoit run` and `vaultdoit ssh`, and a failed build's disk kept aside.

Fast tests use the fake packer and the fake guest (tests/fakes/guest). The real boot needs
``VAULTDOIT_TEST_IMAGE_DIR`` (see test_vm.py): a copy of that image is booted under TCG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO, VENV_BIN, Running, guest_env, packer_runs, run_doit
from vaultdoit import session
from vaultdoit.errors import ConfigError
from vaultdoit.plan import load_project

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
VAULTDOIT = str(VENV_BIN / "vaultdoit")


def vaultdoit(root: Path, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VAULTDOIT, "-C", str(root), *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def built(project_copy, tmp_path: Path):
    root = project_copy("team")
    env = guest_env(root, tmp_path / "fake")
    run_doit(root, env=env)  # final_image and verify
    return root, env, tmp_path / "fake"


def test_run_boots_the_final_image_and_ssh_runs_commands_in_it(built):
    root, env, work = built
    run = Running(root, env)
    try:
        record = run.record()
        assert record["target"] == "final" and record["user"] == "vault"
        assert record["key"] == str(root / "build/keys/access_ed25519")
        hello = vaultdoit(root, env, "ssh", "--", "echo", "hello", "from", "the", "guest")
        assert hello.returncode == 0 and hello.stdout == "hello from the guest\n", hello.stderr
        assert vaultdoit(root, env, "ssh", "--", "false").returncode == 1
        assert vaultdoit(root, env, "ssh", "final", "--", "exit 7").returncode == 7  # the command's exit code
        # A shell (no command): the fake guest's one line.
        assert "fake guest shell" in vaultdoit(root, env, "ssh").stdout
    finally:
        assert run.stop() == 130  # stopped like Ctrl-C
    said = run.out.read_text()
    assert "TCG" in said and "slower" in said  # the fake QEMU has no KVM
    assert "throwaway snapshot" in said and "vaultdoit ssh" in said and "fake guest: login:" in said
    assert not list((root / "build/.vaultdoit/run").glob("*.json"))
    qemu = json.loads((work / "qemu.log").read_text().splitlines()[-1])
    drive = qemu[qemu.index("-drive") + 1]
    assert drive.endswith(",snapshot=on") and "team.qcow2" in drive
    assert "hostfwd=tcp:127.0.0.1:" in qemu[qemu.index("-netdev") + 1]
    assert qemu[qemu.index("-serial") + 1] == "mon:stdio"
    gone = vaultdoit(root, env, "ssh", "--", "true")
    assert gone.returncode == 2 and "no VM of this project is running" in gone.stderr


def test_stages_boot_with_the_build_key(built):
    root, env, _ = built
    run = Running(root, env, "stage:mid")
    try:
        record = run.record()
        assert record["target"] == "stage:mid" and record["key"] == str(root / "build/keys/build_ed25519")
        assert vaultdoit(root, env, "ssh", "stage:mid", "--", "true").returncode == 0
        wrong = vaultdoit(root, env, "ssh", "stage:top", "--", "true")
        assert wrong.returncode == 2 and "no VM of this project is running for stage:top" in wrong.stderr
    finally:
        run.stop()


def test_mistakes_are_one_line(built, tmp_path: Path):
    root, env, _ = built
    unknown = vaultdoit(root, env, "run", "stage:nope")
    assert unknown.returncode == 2 and "no image named 'stage:nope'" in unknown.stderr
    fresh = tmp_path / "fresh"
    shutil.copytree(FIXTURES / "projects" / "team", fresh)
    missing = vaultdoit(fresh, guest_env(fresh, tmp_path / "fresh"), "run")
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("image final is not built (fix: doit final_image)")


def test_keep_failed_keeps_the_disk_aside_and_it_boots(built):
    root, env, work = built
    top = root / "build/stages/top/top.qcow2"
    before = top.read_bytes()
    packer_runs(work)
    with open(root / "ansible/top.yml", "a") as fh:
        fh.write("# changed\n")
    env_fail = {**env, "FAKE_PACKER_FAIL": "top", "FAKE_PACKER_ARGS": str(work / "args.jsonl")}
    failed = run_doit(root, "final_image", "keep_failed=1", env=env_fail, check=False)
    assert failed.returncode == 1
    assert "kept the failed build's disk: build/failed/top/top.qcow2" in failed.stderr
    assert "vaultdoit run failed:top" in failed.stderr
    args = json.loads((work / "args.jsonl").read_text().splitlines()[-1])["args"]
    assert "-on-error=abort" in args  # Packer leaves the VM's disk
    assert top.read_bytes() == before  # the previous good image is the stage's image still
    from vaultdoit import qemu_img

    kept = root / "build/failed/top/top.qcow2"
    assert qemu_img.backing_of(kept) == "../../stages/mid/mid.qcow2"
    run = Running(root, env, "failed:top")
    try:
        assert run.record()["image"] == str(kept)
        assert vaultdoit(root, env, "ssh", "--", "true").returncode == 0
    finally:
        run.stop()
    # The report says where the disk is and how to boot it.
    assert "vaultdoit run failed:top" in (root / "build/reports/runs/latest.html").read_text()
    # Without keep_failed: Packer's own clean-up, nothing kept, and the next build works.
    (work / "args.jsonl").unlink()
    run_doit(root, "final_image", env=env_fail, check=False)
    assert "-on-error=abort" not in json.loads((work / "args.jsonl").read_text())["args"]
    assert kept.exists()  # the last kept disk stays until the next kept failure
    assert run_doit(root, "final_image", env=env).returncode == 0
    assert top.read_bytes() != before


def test_keep_failed_from_vault_toml(built):
    root, env, work = built
    (root / "vault.toml").write_text("keep_failed = true\n")
    with open(root / "ansible/top.yml", "a") as fh:
        fh.write("# changed\n")
    failed = run_doit(root, "final_image", env={**env, "FAKE_PACKER_FAIL": "top"}, check=False)
    assert failed.returncode == 1 and "kept the failed build's disk" in failed.stderr
    # The command line wins over vault.toml.
    shutil.rmtree(root / "build/failed")
    run_doit(root, "final_image", "keep_failed=0", env={**env, "FAKE_PACKER_FAIL": "top"}, check=False)
    assert not (root / "build/failed").exists()


def test_targets_resolve_to_images_with_their_boot_files_and_keys():
    project = load_project(REPO, "mini")
    cfg = project.config
    final = session.resolve(project, None)
    assert final == session.resolve(project, "final") == session.resolve(project, "final_image")
    # mini has two variants: plain `final` is the first one's image, final:<variant> names each.
    assert final.image == cfg.paths.final_image("demo") and final.key == cfg.access_key
    assert final.user == cfg.verify.user and final.name == "final"
    production = session.resolve(project, "final:production")
    assert production == session.resolve(project, "final_image:production")
    assert production.name == "final:production" and production.image == cfg.paths.final_image("production")
    # mini has a stage named final too, built per variant: that one is stage:final:<variant>.
    stage = session.resolve(project, "stage:final:demo")
    assert stage.image == project.stage("final:demo").output and stage.key == cfg.build_key
    assert stage.kernel == project.stage("base").extra_outputs[0]  # from the template's -kernel
    drivers = session.resolve(project, "drivers")
    assert drivers.name == "stage:drivers" and drivers.initrd == project.stage("base").extra_outputs[1]
    failed = session.resolve(project, "failed:frameworks")
    assert failed.image == cfg.failed_dir / "frameworks" / "frameworks.qcow2"
    with pytest.raises(ConfigError, match="no image named 'nope'"):
        session.resolve(project, "nope")
    team = load_project(FIXTURES / "projects" / "team")
    assert session.resolve(team, "stage:top").kernel is None  # a disk image with its own boot loader


# --- a real guest: needs VAULTDOIT_TEST_IMAGE_DIR ---------------------------------------------


@pytest.fixture
def real_image(tmp_path: Path, project_copy) -> tuple[Path, dict[str, str]]:
    folder = os.environ.get("VAULTDOIT_TEST_IMAGE_DIR")
    if not folder:
        pytest.skip("set VAULTDOIT_TEST_IMAGE_DIR to a folder with image.qcow2, vmlinuz, initrd.img and key")
    if shutil.which("qemu-system-x86_64") is None or shutil.which("ssh") is None:
        pytest.skip("needs qemu-system-x86_64 and ssh")
    files = {name: Path(folder) / name for name in ("image.qcow2", "vmlinuz", "initrd.img", "key")}
    if not all(p.is_file() for p in files.values()):
        pytest.skip("test image files missing")
    # A project whose final image is a throwaway copy of the test image.
    root = project_copy("team")
    final = root / "build/final"
    final.mkdir(parents=True)
    shutil.copyfile(files["image.qcow2"], final / "team.qcow2")
    shutil.copyfile(files["vmlinuz"], final / "team.vmlinuz")
    shutil.copyfile(files["initrd.img"], final / "team.initrd.img")
    keys = root / "build/keys"
    keys.mkdir(parents=True, mode=0o700)
    shutil.copyfile(files["key"], keys / "access_ed25519")
    (keys / "access_ed25519").chmod(0o600)
    pub = subprocess.run(["ssh-keygen", "-y", "-f", str(keys / "access_ed25519")], capture_output=True, text=True,
                         check=True).stdout
    (keys / "access_ed25519.pub").write_text(pub)
    return root, {"PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}


@pytest.mark.integration
def test_run_and_ssh_into_a_real_image(real_image):
    root, env = real_image
    image = root / "build/final/team.qcow2"
    before = (image.stat().st_mtime_ns, image.stat().st_size)
    run = Running(root, env)
    try:
        run.record()
        # The first login waits for the guest to boot (under TCG: a minute or more).
        release = vaultdoit(root, env, "ssh", "--timeout", "900", "--", "cat", "/etc/os-release", timeout=1000)
        assert release.returncode == 0, release.stderr + run.out.read_text()[-3000:]
        assert "ID=debian" in release.stdout
        assert vaultdoit(root, env, "ssh", "--", "test -d /etc && exit 3").returncode == 3
        assert vaultdoit(root, env, "ssh", "--", "sudo -n touch /etc/written-in-a-snapshot").returncode == 0
    finally:
        assert run.stop() == 130
    said = run.out.read_text()
    assert "Linux version" in said  # the console was on the terminal (here: the file)
    assert (image.stat().st_mtime_ns, image.stat().st_size) == before  # snapshot=on: nothing written
    stray = subprocess.run(["pgrep", "-f", str(image)], capture_output=True, text=True)
    assert stray.stdout == ""  # no QEMU left behind
