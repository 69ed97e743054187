"""The offline leak scan on real images: ext4 file systems made with ``mke2fs -d`` from
temporary folders, partitioned disks (sfdisk, an ext4 and a FAT partition at their
offsets), an LVM physical volume and a disk with no file system. No VM."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaultdoit import leaks, scan
from vaultdoit.cli import cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("qemu-img", "mke2fs", "debugfs", "sfdisk", "blkid",
                                                              "ssh-keygen")),
                       reason="needs qemu-utils, e2fsprogs, fdisk, util-linux, openssh-client (scripts/setup)"),
]

PORT = 3199
GPT_LINUX, GPT_ESP = "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def keygen(path: Path) -> leaks.PublicKey:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return leaks.read_public_key(path.with_name(path.name + ".pub"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("keys")
    return {"build": keygen(folder / "build_ed25519"), "access": keygen(folder / "access_ed25519"),
            "other": keygen(folder / "other_ed25519"), "folder": folder}


@pytest.fixture
def secrets(keys) -> leaks.Secrets:
    return leaks.Secrets(build_keys=(keys["build"],), access_keys=(keys["access"],),
                        proxies=leaks.proxy_addresses("auto", PORT, "10.0.2.2"))


def write(root: Path, path: str, data: str | bytes, mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        target.write_text(data)
    else:
        target.write_bytes(data)
    target.chmod(mode)
    return target


def clean_tree(root: Path, keys) -> Path:
    """A small image as the cleanup leaves it: locked accounts, only the access key, empty
    login records, an empty journal folder, a host key (made on first boot, allowed)."""
    access: leaks.PublicKey = keys["access"]
    write(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nvault:x:1000:1000::/home/vault:/bin/bash\n")
    write(root, "/etc/shadow", "root:!*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n"
                               "vault:!:20000:0:99999:7:::\n", 0o640)
    write(root, "/etc/gshadow", "root:*::\nsudo:*::vault\nvault:!::\n", 0o640)
    write(root, "/home/vault/.ssh/authorized_keys", f"{access.type} {access.blob} {access.comment}\n", 0o600)
    write(root, "/home/vault/.bashrc", "# ~/.bashrc\n")
    write(root, "/home/vault/.bash_history", "")  # empty: nothing recorded
    (root / "var/log/journal").mkdir(parents=True)
    for name in ("wtmp", "btmp", "lastlog"):
        write(root, f"/var/log/{name}", b"")
    write(root, "/etc/apt/apt.conf.d/70debconf", '// Pre-configure all packages\nDPkg::Pre-Install-Pkgs '
                                                  '{"/usr/sbin/dpkg-preconfigure --apt || true";};\n'
                                                  '// Acquire::http::Proxy "http://example:3128";\n')
    host_key = keys["folder"] / "build_ed25519"
    write(root, "/etc/ssh/ssh_host_ed25519_key", host_key.read_bytes(), 0o600)
    write(root, "/usr/bin/tool", b"\x7fELF" + b"\0" * 64 + b"-----BEGIN OPENSSH PRIVATE KEY-----\0format\0")
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    return root


def ext4(tree: Path, out: Path, size: str = "24M", offset: int = 0) -> Path:
    argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree)]
    if offset:
        argv += ["-E", f"offset={offset}"]
    subprocess.run([*argv, str(out), size], check=True)
    return out


def qcow2(raw: Path) -> Path:
    out = raw.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    return out


def findings(report: scan.Report) -> set[str]:
    return {str(f) for f in report.findings}


def test_clean_image_passes(tmp_path: Path, keys, secrets):
    tree = clean_tree(tmp_path / "root", keys)
    image = qcow2(ext4(tree, tmp_path / "clean.raw"))
    report = scan.scan(image, secrets, tmpdir=tmp_path)
    assert report.findings == [] and report.unreadable == [] and report.clean, findings(report)
    assert report.files == sum(1 for p in tree.rglob("*") if p.is_file())
    assert report.summary().startswith(f"scanned {report.files} files in ") and report.summary().endswith(": clean")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("vaultdoit-scan-")], "temporary folder left"


def _record(kind: int = 7) -> bytes:
    return struct.pack("<i", kind) + b"vault".ljust(380, b"\0")


# One planted leak per class: (path, contents, mode, the finding's text).
LEAKS = {
    "build key text": ("/etc/motd", lambda k: f"key {k['build'].blob} here\n", "the build key (public key text)"),
    "build key fingerprint": ("/var/log/auth.log",
                              lambda k: f"Accepted publickey for vault: ED25519 {k['build'].sha256}\n",
                              "the build key's fingerprint (SHA256:"),
    "proxy as guests see it": ("/etc/environment", lambda k: f"http_proxy=http://10.0.2.2:{PORT}\n",
                               f"the build's proxy address (10.0.2.2:{PORT})"),
    "proxy on the host": ("/opt/app/config.json", lambda k: f'{{"proxy": "127.0.0.1:{PORT}"}}',
                          f"the build's proxy address (127.0.0.1:{PORT})"),
    "apt proxy setting": ("/etc/apt/apt.conf.d/01proxy", lambda k: 'Acquire::http::Proxy "http://cache:3128";\n',
                          "an APT proxy setting"),
    "apt proxy, nested form": ("/etc/apt/apt.conf", lambda k: 'Acquire { https { Proxy "http://c:1"; }; };\n',
                               "an APT proxy setting"),
    "journal file": ("/var/log/journal/0123abcd/system.journal", lambda k: b"LPKSHHRH" + b"\0" * 4000,
                     "a systemd journal file of a build boot"),
    "rotated journal file": ("/var/log/journal/0123abcd/system@x.journal~", lambda k: b"LPKSHHRH",
                             "a systemd journal file of a build boot"),
    "other authorized key": ("/root/.ssh/authorized_keys",
                             lambda k: f"# ops\nfrom=\"10.0.0.0/8\" {k['other'].type} {k['other'].blob} ops\n",
                             "an authorized key other than the access key (ssh-ed25519"),
    "password hash": ("/etc/shadow", lambda k: "root:$y$j9T$abc$def:20000:0:99999:7:::\n",
                      "password hash for root"),
    "locked password hash": ("/etc/shadow-", lambda k: "vault:!$6$salt$hash:20000:0:99999:7:::\n",
                             "password hash for vault"),
    "empty password": ("/etc/shadow", lambda k: "vault::20000:0:99999:7:::\n", "empty password for vault"),
    "group password": ("/etc/gshadow", lambda k: "sudo:$6$x$y::vault\n", "password hash for group sudo"),
    "private key": ("/root/deploy_key", lambda k: (k["folder"] / "other_ed25519").read_text(),
                    "a private key (OPENSSH PRIVATE KEY block)"),
    "PEM private key": ("/opt/app/tls.pem",
                        lambda k: "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1234567890abcdef\n",
                        "a private key (RSA PRIVATE KEY block)"),
    "ansible folder": ("/home/vault/.ansible/tmp/ansible-local-1/x", lambda k: "", "Ansible leftover"),
    "ansible in root": ("/root/.ansible/cp/abc", lambda k: "", "Ansible leftover"),
    "ansible temporary file": ("/tmp/ansible_apt_payload_x.zip", lambda k: "PK", "Ansible leftover"),
    "wtmp records": ("/var/log/wtmp", lambda k: _record() + _record(8), "2 login records"),
    "btmp records": ("/var/log/btmp", lambda k: _record(6), "1 login record"),
    "lastlog record": ("/var/log/lastlog", lambda k: b"\0" * 292 * 1000 + b"\1" * 292, "1 login record"),
    "shell history": ("/root/.bash_history", lambda k: "sudo apt-get update\n", "a shell history (20 bytes)"),
    "python history": ("/home/vault/.python_history", lambda k: "import os\n", "a shell history"),
}


@pytest.mark.parametrize("case", sorted(LEAKS))
def test_each_planted_leak_is_reported_with_its_path(tmp_path: Path, keys, secrets, case: str):
    path, contents, expected = LEAKS[case]
    tree = clean_tree(tmp_path / "root", keys)
    write(tree, path, contents(keys))
    report = scan.scan(ext4(tree, tmp_path / "leak.raw"), secrets, tmpdir=tmp_path)
    lines = findings(report)
    # Ansible leftovers are reported once, at their top folder.
    where = next((p for p in ("/home/vault/.ansible", "/root/.ansible") if path.startswith(p + "/")), path)
    assert any(line.startswith(f"{where}: {expected}") for line in lines), lines
    assert not report.clean and report.summary().endswith(f": {len(lines)} finding" + ("s" if len(lines) > 1 else ""))


def test_keys_shipped_unmodified_by_a_package_are_test_data(tmp_path: Path, keys, secrets):
    tree = clean_tree(tmp_path / "root", keys)
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB1234567890abcdefghij\n-----END EC PRIVATE KEY-----\n"
    lib = write(tree, "/usr/lib/x86_64-linux-gnu/libtls.so.1", "\0" + pem)
    digest = hashlib.md5(lib.read_bytes()).hexdigest()
    # A /usr-merged system lists the file under /lib.
    write(tree, "/var/lib/dpkg/info/libtls1.md5sums", f"{digest}  lib/x86_64-linux-gnu/libtls.so.1\n")
    site = "/opt/venv/lib/python3.11/site-packages"
    wheel_file = write(tree, f"{site}/pkg/tests/key.pem", pem)
    b64 = __import__("base64").urlsafe_b64encode(hashlib.sha256(wheel_file.read_bytes()).digest()).decode().rstrip("=")
    write(tree, f"{site}/pkg-1.0.dist-info/RECORD", f"pkg/tests/key.pem,sha256={b64},{len(pem)}\n")
    write(tree, f"{site}/pkg/tests/changed.pem", pem)  # not in RECORD: the build's own
    report = scan.scan(ext4(tree, tmp_path / "pkg.raw"), secrets, tmpdir=tmp_path)
    assert findings(report) == {f"{site}/pkg/tests/changed.pem: a private key (EC PRIVATE KEY block)"}
    assert any("2 unmodified package files" in n for n in report.notes), report.notes

    lib.write_text(pem + "# modified after installation\n")
    report = scan.scan(ext4(tree, tmp_path / "pkg2.raw"), secrets, tmpdir=tmp_path)
    assert "/usr/lib/x86_64-linux-gnu/libtls.so.1: a private key (EC PRIVATE KEY block)" in findings(report)


def test_without_project_values_only_generic_checks(tmp_path: Path, keys):
    tree = clean_tree(tmp_path / "root", keys)
    write(tree, "/etc/motd", f"{keys['build'].blob}\nhttp://10.0.2.2:{PORT}\n")
    write(tree, "/var/log/wtmp", _record())
    report = scan.scan(ext4(tree, tmp_path / "g.raw"), leaks.Secrets(), tmpdir=tmp_path)
    assert findings(report) == {"/var/log/wtmp: 1 login record"}
    assert any("1 authorized key not judged" in n for n in report.notes), report.notes


def _gpt(disk: Path, layout: str) -> None:
    subprocess.run(["sfdisk", "-q", str(disk)], input=layout, text=True, check=True)


def test_partitioned_disk_reads_every_partition(tmp_path: Path, keys, secrets):
    if shutil.which("mcopy") is None:
        pytest.skip("needs mtools")
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as fh:
        fh.truncate(64 * 2**20)
    _gpt(disk, "label: gpt\n"
               "start=2048, size=2048, type=21686148-6453-6F6E-6574-656564454649\n"
               f"start=4096, size=16384, type={GPT_ESP}\n"
               f"start=20480, type={GPT_LINUX}\n")
    tree = clean_tree(tmp_path / "root", keys)
    write(tree, "/etc/shadow", "root:$6$salt$hash:20000:0:99999:7:::\n")
    ext4(tree, disk, "40M", offset=20480 * 512)
    subprocess.run(["mformat", "-i", f"{disk}@@{4096 * 512}", "-T", "16384", "::"], check=True)
    esp = write(tmp_path, "grub.cfg", f"set proxy=http://10.0.2.2:{PORT}\n")
    subprocess.run(["mmd", "-i", f"{disk}@@{4096 * 512}", "::/EFI"], check=True)
    subprocess.run(["mcopy", "-i", f"{disk}@@{4096 * 512}", str(esp), "::/EFI/grub.cfg"], check=True)

    report = scan.scan(qcow2(disk), secrets, tmpdir=tmp_path)
    assert findings(report) == {
        "partition 2:/EFI/grub.cfg: the build's proxy address (10.0.2.2:3199)",
        "partition 3:/etc/shadow: password hash for root",
    }
    assert report.unreadable == []
    assert any("partition 1: BIOS boot partition" in n for n in report.notes), report.notes


def test_mbr_disk_with_logical_partition(tmp_path: Path, keys, secrets):
    disk = tmp_path / "mbr.raw"
    with disk.open("wb") as fh:
        fh.truncate(48 * 2**20)
    _gpt(disk, "label: dos\nstart=2048, size=40960, type=5\nstart=4096, size=36864, type=83\n")
    tree = clean_tree(tmp_path / "root", keys)
    write(tree, "/root/.bash_history", "ls\n")
    ext4(tree, disk, "18M", offset=4096 * 512)
    report = scan.scan(disk, secrets, tmpdir=tmp_path)
    assert findings(report) == {"partition 5:/root/.bash_history: a shell history (3 bytes)"}
    assert report.unreadable == []


LVM_CRC = [0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
           0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c]


def lvm_label() -> bytes:
    """An LVM2 physical volume label (sector 1), as pvcreate writes it, with its checksum."""
    label = bytearray(512)
    label[0:8], label[8:16], label[20:24] = b"LABELONE", struct.pack("<Q", 1), struct.pack("<I", 32)
    label[24:32], label[32:64] = b"LVM2 001", b"0123456789abcdefghijklmnopqrstuv"
    crc = 0xf597a6cf
    for byte in label[20:]:
        crc ^= byte
        crc = (crc >> 4) ^ LVM_CRC[crc & 0xf]
        crc = (crc >> 4) ^ LVM_CRC[crc & 0xf]
    label[16:20] = struct.pack("<I", crc)
    return bytes(label)


def test_lvm_and_unknown_volumes_are_never_a_silent_pass(tmp_path: Path, keys, secrets):
    disk = tmp_path / "lvm.raw"
    with disk.open("wb") as fh:
        fh.truncate(64 * 2**20)
    _gpt(disk, f"label: gpt\nstart=2048, size=40960, type={GPT_LINUX}\nstart=43008, size=8192, type={GPT_LINUX}\n"
               "start=51200, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
    ext4(clean_tree(tmp_path / "root", keys), disk, "20M", offset=2048 * 512)
    with disk.open("r+b") as fh:
        fh.seek(51200 * 512 + 512)
        fh.write(lvm_label())
    assert "TYPE=LVM2_member" in subprocess.run(["blkid", "-p", "-o", "export", "-O", str(51200 * 512), str(disk)],
                                                capture_output=True, text=True).stdout
    report = scan.scan(disk, secrets, tmpdir=tmp_path)
    assert report.unreadable == [
        f"cannot read {disk} partition 2 (no file system found): not scanned",
        f"cannot read {disk} partition 3 (LVM physical volume): not scanned",
    ]
    assert report.findings == [] and report.files > 0 and not report.clean
    assert report.summary().endswith(": 2 volumes not scanned")


def run_cli(*args: str, cwd: Path):
    """``vaultdoit`` in a subprocess: exit code and output as a user sees them."""
    proc = subprocess.run([sys.executable, "-m", "vaultdoit", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_exit_codes_and_lines(tmp_path: Path, keys):
    tree = clean_tree(tmp_path / "root", keys)
    clean = qcow2(ext4(tree, tmp_path / "clean.raw"))
    code, out, err = run_cli("scan", str(clean), cwd=tmp_path)
    assert code == 0 and out.strip().endswith(": clean"), (out, err)
    assert "note: no project here: generic checks only" in err

    write(tree, "/etc/motd", f"{keys['build'].blob}\n")
    write(tree, "/var/log/journal/x/system.journal", b"LPKSHHRH")
    leaky = ext4(tree, tmp_path / "leaky.raw")
    code, out, err = run_cli("scan", str(leaky), "--build-key", str(keys["folder"] / "build_ed25519.pub"),
                             "--access-key", str(keys["folder"] / "access_ed25519.pub"), cwd=tmp_path)
    assert code == 1, (out, err)
    assert out.splitlines()[:-1] == ["/etc/motd: the build key (public key text)",
                                     "/var/log/journal/x/system.journal: a systemd journal file of a build boot "
                                     "(0.0 MiB)"]
    assert out.splitlines()[-1].endswith(": 2 findings")

    lvm = tmp_path / "pv.raw"
    with lvm.open("wb") as fh:
        fh.truncate(8 * 2**20)
        fh.seek(512)
        fh.write(lvm_label())
    code, out, err = run_cli("scan", str(lvm), cwd=tmp_path)
    assert code == 2 and f"vaultdoit: error: cannot read {lvm} (LVM physical volume): not scanned" in err
    assert "Traceback" not in err

    for bad in (tmp_path / "missing.qcow2", write(tmp_path, "notes.txt", "")):
        code, out, err = run_cli("scan", "--no-project", str(bad), cwd=tmp_path)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert str(bad) in err


def test_cli_takes_keys_and_proxy_from_the_project(tmp_path: Path, keys):
    project = tmp_path / "project"
    (project / "packer").mkdir(parents=True)
    (project / "vault.toml").write_text(f"apt_proxy_port = {PORT}\n")
    (project / "build/keys").mkdir(parents=True)
    for name in ("build_ed25519.pub", "access_ed25519.pub"):
        shutil.copy(keys["folder"] / name, project / "build/keys" / name)
    tree = clean_tree(tmp_path / "root", keys)
    write(tree, "/etc/environment", f"http_proxy=http://10.0.2.2:{PORT}\n")
    write(tree, "/root/.ssh/authorized_keys", (keys["folder"] / "other_ed25519.pub").read_text())
    image = ext4(tree, tmp_path / "p.raw")
    code, out, err = run_cli("-C", str(project), "scan", str(image), cwd=tmp_path)
    assert code == 1, (out, err)
    assert f"/etc/environment: the build's proxy address (10.0.2.2:{PORT})" in out
    assert "/root/.ssh/authorized_keys: an authorized key other than the access key (ssh-ed25519" in out
    assert "note:" not in err, err


def test_scan_as_an_unprivileged_user_reads_unreadable_modes(tmp_path: Path, keys, request):
    """debugfs keeps modes; without root a 0000 file must still be read (and removed after)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to switch to an unprivileged user")
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                            "-c", "import vaultdoit"], capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    if probe.returncode != 0:
        pytest.skip("the test's Python is not usable by nobody")
    # pytest's own folders are root's alone: a folder nobody can reach.
    work = Path(tempfile.mkdtemp(prefix="vaultdoit-test-"))
    work.chmod(0o777)
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    tree = clean_tree(tmp_path / "root", keys)
    write(tree, "/etc/shadow", "root:$6$x$y:20000:0:99999:7:::\n", 0o000)
    (tree / "root").mkdir(exist_ok=True)
    (tree / "root").chmod(0o000)
    image = ext4(tree, work / "u.raw")
    image.chmod(0o644)
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                           "-m", "vaultdoit", "scan", "--no-project", "--tmpdir", str(work), str(image)],
                          capture_output=True, text=True, cwd=work,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "/etc/shadow: password hash for root" in proc.stdout
    assert sorted(p.name for p in work.iterdir()) == ["u.raw"], "temporary folder left"


def test_public_key_forms(keys):
    blob = keys["other"].blob
    key = leaks.parse_key_line(f'command="x",no-pty ssh-ed25519 {blob} some comment')
    assert key is not None and key.type == "ssh-ed25519" and key.comment == "some comment"
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(keys["folder"] / "other_ed25519.pub")],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    assert key.sha256 == fingerprint
    assert leaks.parse_key_line("# comment") is None and leaks.parse_key_line("not a key") is None
    assert leaks.proxy_addresses("http://cache.lan:3128", 3142, "10.0.2.2") == (
        "10.0.2.2:3142", "127.0.0.1:3142", "cache.lan:3128")
