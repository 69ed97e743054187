"""The bootstrapped base: the mmdebstrap command, and the file system made without root."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from vaultdoit import proc
from vaultdoit.bootstrap import BootstrapSpec, check_subordinate_ids, mkfs_argv, mmdebstrap_argv, read_packages
from vaultdoit.errors import VaultError


def spec(**kw) -> BootstrapSpec:
    base = dict(name="base", suite="bookworm", packages=("a", "b"), configure=Path("/p/configure.sh"),
                disk_size="3G", output=Path("/b/base.qcow2"), kernel=Path("/b/vmlinuz"),
                initrd=Path("/b/initrd.img"), user="vault", build_pubkey=Path("/k.pub"))
    base.update(kw)
    return BootstrapSpec(**base)  # type: ignore[arg-type]


def test_argv_without_mirror_lets_mmdebstrap_choose():
    argv = mmdebstrap_argv(spec(), Path("/r/root.tar"))
    # Unshare mode for root and normal users alike; a tarball keeps the owners right.
    assert argv[:3] == ["mmdebstrap", "--mode=unshare", "--variant=apt"]
    assert "--include=a,b" in argv and argv[-2:] == ["bookworm", "/r/root.tar"]
    assert "--customize-hook=chroot \"$1\" /bin/sh -eu /tmp/configure.sh" in argv


def test_build_proxy_never_stays_in_the_image():
    argv = mmdebstrap_argv(spec(apt_proxy="http://127.0.0.1:3142", mirror="http://m/debian"), Path("/r.tar"))
    assert '--aptopt=Acquire::http::Proxy "http://127.0.0.1:3142"' in argv
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert hooks[-1] == '--customize-hook=rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"'
    assert argv[-1] == "http://m/debian"


def test_package_list_comments(tmp_path: Path):
    f = tmp_path / "p.txt"
    f.write_text("# c\na b  # trailing\n\nc\n")
    assert read_packages(f) == ("a", "b", "c")


@pytest.mark.skipif(proc.which("newuidmap") is None, reason="needs newuidmap (uidmap)")
def test_a_user_without_subordinate_ids_is_told_before_mmdebstrap_runs(tmp_path: Path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\nbob:165536:65536\n")
    subgid.write_text("alice:100000:65536\n")
    check_subordinate_ids("alice", (subuid, subgid))
    with pytest.raises(VaultError) as info:
        check_subordinate_ids("bob", (subuid, subgid))
    assert info.value.file == str(subgid) and "no subordinate ids for user bob" in info.value.message
    assert "scripts/setup" in (info.value.hint or "")
    with pytest.raises(VaultError):
        check_subordinate_ids("carol", (tmp_path / "absent", subgid))


# --- the file system, made from mmdebstrap's tarball without root ---------------------------------------


def _tarball(path: Path) -> None:
    """A small root file system as mmdebstrap writes it: owners other than the builder, setuid, devices."""
    def add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, uid: int = 0,
            gid: int = 0, data: bytes = b"", **extra: object) -> None:
        info = tarfile.TarInfo("./" + name)
        info.type, info.mode, info.uid, info.gid, info.size = kind, mode, uid, gid, len(data)
        for key, value in extra.items():
            setattr(info, key, value)
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for folder in ("etc", "usr", "usr/bin", "dev", "home", "boot"):
            add(tar, folder, tarfile.DIRTYPE, 0o755)
        add(tar, "etc/shadow", mode=0o640, gid=42, data=b"root:*:19000::::::\n")
        add(tar, "etc/sudoers", mode=0o440, data=b"root ALL=(ALL) ALL\n")
        add(tar, "usr/bin/sudo", mode=0o4755, data=b"\x7fELF")
        add(tar, "usr/bin/sudoedit", tarfile.SYMTYPE, 0o777, linkname="sudo")
        add(tar, "usr/bin/sudo-again", tarfile.LNKTYPE, linkname="./usr/bin/sudo")
        add(tar, "dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3)
        add(tar, "home/vault", tarfile.DIRTYPE, 0o700, 1000, 1000)
        add(tar, "home/vault/key", mode=0o600, uid=1000, gid=1000, data=b"ssh-ed25519 AAAA\n")
        add(tar, "boot/secret-0600", mode=0o600, data=b"kernel")


def _stat(raw: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"stat {path}", str(raw)], capture_output=True, text=True).stdout


@pytest.mark.skipif(any(proc.which(t) is None for t in ("fakeroot", "mke2fs", "debugfs")),
                    reason="needs fakeroot and e2fsprogs")
def test_filesystem_from_the_tarball_keeps_owners_when_a_normal_user_makes_it(normal_user):
    work = normal_user.folder()
    try:
        tarball, tree, raw = work / "root.tar", work / "tree", work / "disk.raw"
        _tarball(tarball)
        normal_user.own(tarball)
        normal_user.run(["mkdir", str(tree)], cwd=work)
        normal_user.run(mkfs_argv(tarball, tree, raw, "16M"), cwd=work)

        expected = {  # path: (uid, gid, mode, type)
            "/etc/shadow": (0, 42, "0640", "regular"),
            "/etc/sudoers": (0, 0, "0440", "regular"),
            "/usr/bin/sudo": (0, 0, "04755", "regular"),
            "/home/vault": (1000, 1000, "0700", "directory"),
            "/home/vault/key": (1000, 1000, "0600", "regular"),
            "/dev/null": (0, 0, "0666", "character special"),
            "/boot/secret-0600": (0, 0, "0600", "regular"),
        }
        for path, (uid, gid, mode, kind) in expected.items():
            text = _stat(raw, path)
            assert f"Type: {kind}" in text and f"Mode:  {mode}" in text, (path, text)
            assert f"User: {uid:>5}   Group: {gid:>5}" in text, (path, text)
        assert "Device major/minor number: 01:03" in _stat(raw, "/dev/null")
        assert 'Fast link dest: "sudo"' in _stat(raw, "/usr/bin/sudoedit")
        assert "Links: 2" in _stat(raw, "/usr/bin/sudo")
        # On the host everything is the builder's: nothing it cannot remove.
        from conftest import not_owned_by

        assert not_owned_by(normal_user.uid, work) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)
