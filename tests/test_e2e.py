"""End to end: the mini profile built for real from nothing (mmdebstrap, Packer,
Ansible, QEMU), both variants (demo and production, which differ in the final
stage) side by side with `doit -n 2`, booted and checked over SSH, then a
tag-scoped run and the incremental cases.

One real build, shared by every test here. It runs as a normal user (as root,
the tests make one: see conftest's normal_user), signed with a key of that
user's; everything it leaves in the project must be that user's, and so do the
`vaultdoit run` and `vaultdoit ssh` sessions on its images.

Slow (about 25 minutes under TCG on 2 cores, plus about a minute for the test
user's virtual environment where the runner's Python is out of its reach); CI
runs it every time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import (REPO, NormalUser, Running, ensure_subordinate_ids, executed, low_free_port, not_owned_by,
                      ran_tasks)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("packer", "qemu-system-x86_64", "mmdebstrap")),
                       reason="needs packer, qemu-system-x86 and mmdebstrap (scripts/setup installs them)"),
]

BUILDER: list[NormalUser] = []  # who runs doit (set by the project fixture)
SIGNING: dict[str, str] = {}  # VAULTDOIT_SIGNING_KEY for the builds

PROJECT_FILES = ("dodo.py", "vault.toml", "packer", "ansible", "python")
# The shared monitoring role's metrics, read in the guest: disk, unit state and the GPU count
# (no GPU in these VMs: 0, and the first-boot and health checks still pass).
METRICS_CHECK = (
    "python3 -c \"import re, sys, urllib.request; "
    "t = urllib.request.urlopen('http://127.0.0.1:9101/metrics').read().decode(); "
    "sys.exit(not (re.search('^vault_gpu_count 0$', t, re.M) and 'vault_disk_free_bytes{path=' in t "
    "and re.search('^vault_unit_active.unit=.vault-monitor.service.. 1$', t, re.M)))\""
)
STAGES = ("base", "drivers", "frameworks", "final")
SHARED = STAGES[:-1]
VARIANTS = ("demo", "production")


@pytest.fixture(scope="module")
def project(normal_user: NormalUser) -> Path:
    if normal_user.switch:
        ensure_subordinate_ids(normal_user.name)  # what scripts/setup gives a builder
    BUILDER[:] = [normal_user]
    home = normal_user.folder()
    # The base is bootstrapped in a user namespace: say so at once where none can be made
    # (e.g. AppArmor's restriction on Ubuntu 24.04), not 20 minutes into the build.
    userns = normal_user.run(["unshare", "--user", "--map-root-user", "true"], cwd=home, check=False)
    if userns.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"{normal_user.name} cannot make a user namespace ({userns.stderr.strip()}); "
                    "see `vaultdoit doctor`", pytrace=False)
    root = home / "project"
    root.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        else:
            shutil.copy2(src, root / name)
    # Its own APT proxy port, so a proxy left running by a build in the repository does not clash.
    toml = root / "vault.toml"
    toml.write_text(toml.read_text().replace('accelerator = "auto"',
                                             f'accelerator = "auto"\napt_proxy_port = {low_free_port()}'))
    key = home / "keys" / "release_ed25519"
    key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release@example.com", "-f", str(key)],
                   check=True)
    SIGNING["VAULTDOIT_SIGNING_KEY"] = str(key)
    normal_user.own(home)
    yield root
    normal_user.run([str(normal_user.python_bin / "vaultdoit"), "-C", str(root), "cache", "stop"], cwd=root,
                    check=False)
    shutil.rmtree(home, ignore_errors=True)


def run_doit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """doit in ``root`` as the builder, with the signing key."""
    user = BUILDER[0]
    return user.run([str(user.python_bin / "doit"), *args], cwd=root, env=SIGNING)


def doit(root: Path, *args: str) -> set[str]:
    """The tasks a doit run executed."""
    if "-n" in args:  # doit's JSON reporter fails with threads (see conftest.executed)
        return executed(run_doit(root, "--reporter=console", *args).stdout)
    return ran_tasks(run_doit(root, "--reporter=json", *args).stdout)


def stage_image(root: Path, name: str, variant: str = "demo") -> Path:
    """A stage's image; the final stage is built per variant."""
    if name == "final":
        return root / f"build/mini/stages/{variant}/final/final.qcow2"
    return root / f"build/mini/stages/{name}/{name}.qcow2"


def final_image(root: Path, variant: str = "demo") -> Path:
    return root / f"build/final/vault-mini-{variant}.qcow2"


def build_span(root: Path, name: str, variant: str = "demo") -> tuple[float, float]:
    """When a stage's last build ran (from its record): (start, end) in epoch seconds."""
    import calendar
    import time

    from vaultdoit import owned

    record = owned.read_marker(stage_image(root, name, variant).parent)
    assert record is not None
    end = calendar.timegm(time.strptime(record["finished"], "%Y-%m-%dT%H:%M:%SZ"))
    return end - record["build_seconds"] - record["waited_seconds"], end


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def boot(root: Path, checks: list[str], tag: str, units: tuple[str, ...] = ("vault-monitor.service",),
         image: Path | None = None):
    from vaultdoit.vm import BootSpec, boot_test

    final = root / "build/final"
    spec = BootSpec(
        image=image or final / "vault-mini-demo.qcow2",
        kernel=final / "vault-mini-demo.vmlinuz",
        initrd=final / "vault-mini-demo.initrd.img",
        user="vault",
        key=root / "build/keys/access_ed25519",
        units=units,
        checks=tuple(checks),
        boot_timeout=900,
        log_dir=root / f"build/logs/e2e-{tag}",
    )
    report = boot_test(spec)
    print(report.render())
    return report


def image_files(image: Path, paths: list[str]) -> tuple[dict[str, str], str]:
    """Offline, from the image: debugfs's `stat` of each path, and /var/lib/dpkg/status."""
    with tempfile.TemporaryDirectory(prefix="vaultdoit-e2e-") as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
        stats = {p: subprocess.run(["debugfs", "-R", f"stat {p}", str(raw)], capture_output=True, text=True).stdout
                 for p in paths}
        stats["acl /var/log/journal"] = subprocess.run(["debugfs", "-R", "ea_list /var/log/journal", str(raw)],
                                                       capture_output=True, text=True).stdout
        status = subprocess.run(["debugfs", "-R", "cat /var/lib/dpkg/status", str(raw)], capture_output=True,
                                text=True, check=True).stdout
    return stats, status


def read_offline(image: Path, path: str) -> str:
    """A file's text, read from the image (and its backing chain) without booting it."""
    with tempfile.TemporaryDirectory(prefix="vaultdoit-e2e-") as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
        return subprocess.run(["debugfs", "-R", f"cat {path}", str(raw)], capture_output=True, text=True,
                              check=True).stdout


def installed(status: str) -> dict[str, str]:
    """name -> version of the installed packages in a dpkg status file."""
    found = {}
    for paragraph in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Status") == "install ok installed":
            found[fields["Package"]] = fields["Version"]
    return dict(sorted(found.items()))


def check_supply_chain(root: Path, manifest: dict) -> None:
    """What a customer checks: the signatures, an SBOM that lists what the image holds, and root's
    files owned by root in an image a normal user built (the bootstrap ran in a user namespace)."""
    from cyclonedx.validation.json import JsonStrictValidator

    from vaultdoit import sbom

    final = root / "build/final"
    text = (final / "vault-mini-demo.qcow2.cdx.json").read_text()
    assert JsonStrictValidator(sbom.SPEC).validate_str(text) is None
    document = json.loads(text)
    stats, status = image_files(final / "vault-mini-demo.qcow2", [
        "/etc/shadow", "/usr/bin/sudo", "/home/vault/.ssh/authorized_keys", "/etc/sudoers.d/90-vault"])
    assert sbom.packages(document, "deb") == installed(status)
    assert sbom.packages(document, "pypi") == manifest["contents"]["python_packages"]
    assert "pkg:deb/debian/openssh-server@" in text and "distro=debian-12" in text
    # The chain: each stage a component (with its key), each built on its parent.
    stages = {c["name"]: c["version"] for c in document["components"] if c["name"].startswith("stage:")}
    assert stages == {f"stage:{s['name']}": s["input_digest"] for s in manifest["stages"]}
    depends = {d["ref"]: d.get("dependsOn", []) for d in document["dependencies"]}
    assert [depends[f"stage:{child}"] for child in STAGES[1:]] == [[f"stage:{parent}"] for parent in STAGES[:-1]]
    for path, owner, mode in (("/etc/shadow", "User:     0   Group:    42", "Mode:  0640"),
                              ("/usr/bin/sudo", "User:     0   Group:     0", "Mode:  04755"),
                              ("/home/vault/.ssh/authorized_keys", "User:  1000   Group:  1000", "Mode:  0600"),
                              ("/etc/sudoers.d/90-vault", "User:     0   Group:     0", "Mode:  0440")):
        assert owner in stats[path] and mode in stats[path], (path, stats[path])
    assert "system.posix_acl_default" in stats["acl /var/log/journal"]
    # Provenance: no git here (a copy), and that is said; the host's bootstrap tools.
    assert manifest["provenance"]["git"]["reason"] == "not a git checkout"
    assert {"mmdebstrap", "fakeroot", "e2fsprogs"} <= set(manifest["provenance"]["build_host"]["packages"])
    # Signed with the builder's key: checked as a customer does, with an allowed-signers file.
    key = Path(SIGNING["VAULTDOIT_SIGNING_KEY"])
    pub = key.with_name(key.name + ".pub").read_text().split()
    signers = root.parent / "allowed_signers"
    signers.write_text(f'release@example.com namespaces="vaultdoit" {pub[0]} {pub[1]}\n')
    checked = subprocess.run([sys.executable, "-m", "vaultdoit", "verify-signature", str(final / "vault-mini-demo.qcow2"),
                              "--allowed-signers", str(signers)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "vault-mini-demo.initrd.img, vault-mini-demo.qcow2, vault-mini-demo.vmlinuz match" in checked.stdout
    assert subprocess.run(["sha256sum", "-c", "vault-mini-demo.qcow2.sha256"], cwd=final).returncode == 0


def test_full_build_boot_and_incremental(project: Path):
    root = project
    # 1. From nothing, both variants with `doit -n 2`: every task runs once (the shared stages
    #    are built once), the two final stages side by side; both images are standalone and
    #    each `verify:<variant>` boots its own.
    everything = {"keys", "cache:apt", "cache:wheels", *(f"stage:{s}" for s in SHARED),
                  *(f"{task}:{v}" for task in ("stage:final", "final_image", "verify") for v in VARIANTS)}
    assert doit(root, "-n", "2", "final_image", "verify") == everything
    # Built by a normal user: everything the build left in the project is theirs.
    assert not_owned_by(BUILDER[0].uid, root) == []
    for name in SHARED[1:]:
        log = (root / f"build/logs/mini/stage-{name}.log").read_text()
        assert log.count(f"Build 'qemu.{name}' finished") == 1, name
    (demo_start, demo_end), (prod_start, prod_end) = (build_span(root, "final", v) for v in VARIANTS)
    assert demo_start < prod_end and prod_start < demo_end, "the two final stages were built side by side"
    final = final_image(root)
    for variant in VARIANTS:
        verify = json.loads((root / f"build/mini/reports/{variant}/verify-vault-mini-{variant}.json").read_text())
        assert verify["ok"] and {c["name"] for c in verify["checks"]} >= {"system running", "clean shutdown"}
        assert any("/etc/vault/variant" in c["name"] and c["ok"] for c in verify["checks"])
    manifests = {v: json.loads((root / f"build/final/vault-mini-{v}.qcow2.manifest.json").read_text())
                 for v in VARIANTS}
    manifest = manifests["demo"]
    assert manifest["image"]["sha256"] == hashlib.sha256(final.read_bytes()).hexdigest()
    assert manifest["image"]["variant"] == "demo"
    assert [s["name"] for s in manifest["stages"]] == list(STAGES)
    # Same shared stages in both images, their own final stage each.
    digests = {v: [s["input_digest"] for s in m["stages"]] for v, m in manifests.items()}
    assert digests["demo"][:3] == digests["production"][:3] and digests["demo"][3] != digests["production"][3]
    assert manifest["contents"]["python_packages"]["prometheus_client"] == "0.26.0"
    assert "openssh-server" in manifest["contents"]["debian_packages"]
    drivers_inputs = manifest["stages"][1]["inputs"]
    playbook = root / "ansible/drivers.yml"
    assert drivers_inputs["ansible/drivers.yml"] == "sha256:" + hashlib.sha256(playbook.read_bytes()).hexdigest()
    from vaultdoit import qemu_img

    info = qemu_img.info(final)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    qemu_img.check(final)
    assert qemu_img.backing_of(stage_image(root, "drivers")) == "../base/base.qcow2"
    check_supply_chain(root, manifest)

    build_pub = (root / "build/keys/build_ed25519.pub").read_text().split()[1]
    access_pub = (root / "build/keys/access_ed25519.pub").read_text().split()[1]
    report = boot(root, [
        # each stage's work
        "test -f /etc/vault/stages/drivers && command -v lspci",
        "grep -q 'options virtio_net' /etc/modprobe.d/vault-driver.conf",
        "/opt/vault/venv/bin/python -c 'import prometheus_client, packaging'",
        "grep -q '^prometheus_client==0.26.0' /etc/vault/pip-freeze.txt",
        "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:9101/metrics')\"",
        # the shared monitoring role (also the vault-cube image's): disk, unit and GPU metrics,
        # the health timer, and the first-boot check with its report (no GPU here: 0, not a failure)
        METRICS_CHECK,
        "systemctl is-active vault-health.timer && systemctl is-enabled vault-firstboot.service",
        "test \"$(systemctl show -p Result --value vault-firstboot.service)\" = success",
        "python3 -c \"import json; r = json.load(open('/var/lib/vault/firstboot.json')); "
        "assert r['ok'] and r['checks'][0]['check'] == 'gpu', r\"",
        "sudo -n systemctl start vault-health.service && test -s /run/vault/health.json",
        "test -f /usr/share/doc/vault-mini/README.md && grep -q openssh-server /etc/vault/dpkg-packages.txt",
        # cleanup: no build key, no password, no proxy, no wheelhouse
        f"! grep -q '{build_pub}' ~/.ssh/authorized_keys",
        f"grep -q '{access_pub}' ~/.ssh/authorized_keys",
        "test -z \"$(sudo -n awk -F: '$2 !~ /^[!*]/ {print $1}' /etc/shadow)\"",
        # the demo variant's own files
        "grep -qx demo /etc/vault/variant && grep -q '(demo)' /etc/motd",
        "! sudo -n grep -rqi proxy /etc/apt/apt.conf.d/ && test ! -e /etc/pip.conf",
        "test ! -e /var/tmp/vault-wheelhouse && test ! -e /home/vault/.ansible",
    ], "full")
    assert report.ok, report.render()

    # Nothing of the build in the image: the offline scan (build key, proxy, journals, login
    # records, passwords, private keys, Ansible leftovers) comes out clean.
    scan = subprocess.run([sys.executable, "-m", "vaultdoit", "-C", str(root), "scan", str(final)],
                          capture_output=True, text=True)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert scan.stdout.strip().splitlines()[-1].endswith(": clean"), scan.stdout

    images = {s: identity(stage_image(root, s)) for s in STAGES}

    # 2. No-op.
    assert doit(root, "final_image") == set()
    assert {s: identity(stage_image(root, s)) for s in STAGES} == images

    # 3. The monitoring script (final stage only): first a tag-scoped run of the monitoring role on
    #    the demo final stage's last build, into a development image that boots with the change;
    #    the stage's own image is untouched and the next build is still a full one.
    script = root / "ansible/roles/monitoring/files/bin/vault-monitor"
    script.write_text(script.read_text() + "\n# e2e: monitoring change\n")
    dev = run_doit(root, "dev:final:demo", "--tags", "monitoring")
    assert "PLAY RECAP" in dev.stdout + dev.stderr
    dev_log = (root / "build/mini/dev/final-demo/logs/ansible.log").read_text()
    assert "monitoring : Monitoring and health scripts" in dev_log and "cleanup :" not in dev_log
    dev_image = root / "build/mini/dev/final-demo/final.qcow2"
    # Read offline (a boot would cost the suite a minute and a half; step 5 boots the full rebuild).
    assert "e2e: monitoring change" in read_offline(dev_image, "/usr/local/bin/vault-monitor")
    assert identity(stage_image(root, "final")) == images["final"]
    assert doit(root, "final_image", "variant=demo") == {"stage:final:demo", "final_image:demo"}
    for s in ("base", "drivers", "frameworks"):
        assert identity(stage_image(root, s)) == images[s], f"{s} must not be rewritten"
    assert identity(stage_image(root, "final")) != images["final"]

    # 4. The drivers role: drivers, frameworks and the demo final rebuild, never the base (both
    #    finals side by side are step 1's; one variant here keeps the suite's time down).
    images = {s: identity(stage_image(root, s)) for s in STAGES}
    defaults = root / "ansible/roles/driver_config/defaults/main.yml"
    defaults.write_text(defaults.read_text().replace('driver_options: "debug=0"', 'driver_options: "debug=1"'))
    assert doit(root, "final_image", "variant=demo") == {
        "stage:drivers", "stage:frameworks", "stage:final:demo", "final_image:demo"}
    assert identity(stage_image(root, "base")) == images["base"]
    for s in ("drivers", "frameworks", "final"):
        assert identity(stage_image(root, s)) != images[s]

    # The warm rebuild of drivers got its packages from the APT proxy's cache.
    from vaultdoit import owned

    record = owned.read_marker(stage_image(root, "drivers").parent)
    assert record is not None
    assert record["apt"]["served_files"] > 0
    assert record["apt"]["upstream_debs"] == 0, record["apt"]

    # 5. The rebuilt image carries both changes; a missing unit fails the boot test.
    report = boot(root, [
        "grep -q 'debug=1' /etc/modprobe.d/vault-driver.conf",
        "grep -q 'e2e: monitoring change' /usr/local/bin/vault-monitor",
    ], "incremental", units=("vault-monitor.service", "vault-missing.service"))
    failed = [c.name for c in report.checks if not c.ok]
    assert failed == ["unit vault-missing.service active"], report.render()
    assert not report.ok

    # 6. A corrupted image fails clearly, without hanging.
    broken = root / "build/broken.qcow2"
    shutil.copyfile(final, broken)
    with broken.open("r+b") as fh:
        fh.write(b"\xff" * 2**20)
    from vaultdoit.errors import BootError

    with pytest.raises(BootError) as info:
        boot(root, [], "broken", image=broken)
    assert "QEMU exited" in str(info.value)


def test_run_and_ssh_into_the_final_image_and_a_stage(project: Path):
    """`vaultdoit run` boots an image on a snapshot (console here, SSH on loopback); `vaultdoit ssh` runs commands."""
    root = project
    if not final_image(root).exists():
        pytest.skip("needs the image built by the test above")
    user = BUILDER[0]  # the images and keys are the builder's: it boots them and logs in

    def ssh(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return user.run([str(user.python_bin / "vaultdoit"), "-C", str(root), "ssh", *args], cwd=root,
                        check=False, timeout=timeout)

    final = Running(root, {}, user=user)
    try:
        assert final.record()["target"] == "final"
        active = ssh("--timeout", "900", "--", "systemctl", "is-active", "vault-monitor.service", timeout=1000)
        assert active.returncode == 0 and active.stdout.strip() == "active", active.stderr
        assert ssh("--", "exit 5", timeout=300).returncode == 5
    finally:
        assert final.stop() == 130
    assert "Linux version" in final.out.read_text()
    # A stage boots with its template's kernel and logs in with the build key.
    stage = Running(root, {}, "stage:drivers", user=user)
    try:
        assert stage.record()["key"] == str(root / "build/keys/build_ed25519")
        marker = ssh("stage:drivers", "--timeout", "900", "--", "test", "-f", "/etc/vault/stages/drivers",
                     timeout=1000)
        assert marker.returncode == 0, marker.stderr
        later = ssh("stage:drivers", "--", "test", "-e", "/etc/vault/stages/final", timeout=300)
        assert later.returncode == 1  # the final stage's work is not in the drivers image
    finally:
        stage.stop()
    assert not_owned_by(user.uid, root / "build/mini") == []  # the runs' records were the builder's too


def test_zlib_final_image_reruns_only_final_image_and_boots(project: Path):
    """Compression is a setting of the final image alone; zlib images boot too."""
    root = project
    if not final_image(root).exists():
        pytest.skip("needs the image built by the test above")
    toml = root / "vault.toml"
    toml.write_text(toml.read_text().replace('compression = "zstd"', 'compression = "zlib"'))
    assert doit(root, "final_image", "variant=demo") == {"final_image:demo"}
    from vaultdoit import qemu_img

    final = final_image(root)
    info = qemu_img.info(final)
    assert info["format-specific"]["data"]["compression-type"] == "zlib"
    qemu_img.check(final)
    report = boot(root, ["test -f /etc/vault/stages/final"], "zlib")
    assert report.ok, report.render()
