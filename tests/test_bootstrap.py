"""The mmdebstrap command of a bootstrapped base stage."""

from __future__ import annotations

from pathlib import Path

from vaultdoit.bootstrap import BootstrapSpec, mmdebstrap_argv, read_packages


def spec(**kw) -> BootstrapSpec:
    base = dict(name="base", suite="bookworm", packages=("a", "b"), configure=Path("/p/configure.sh"),
                disk_size="3G", output=Path("/b/base.qcow2"), kernel=Path("/b/vmlinuz"),
                initrd=Path("/b/initrd.img"), user="vault", build_pubkey=Path("/k.pub"))
    base.update(kw)
    return BootstrapSpec(**base)  # type: ignore[arg-type]


def test_argv_without_mirror_lets_mmdebstrap_choose():
    argv = mmdebstrap_argv(spec(), Path("/r"))
    assert argv[:3] == ["mmdebstrap", "--mode=root", "--variant=apt"]
    assert "--include=a,b" in argv and argv[-2:] == ["bookworm", "/r"]
    assert "--customize-hook=chroot \"$1\" /bin/sh -eu /tmp/configure.sh" in argv


def test_build_proxy_never_stays_in_the_image():
    argv = mmdebstrap_argv(spec(apt_proxy="http://127.0.0.1:3142", mirror="http://m/debian"), Path("/r"))
    assert '--aptopt=Acquire::http::Proxy "http://127.0.0.1:3142"' in argv
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert hooks[-1] == '--customize-hook=rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"'
    assert argv[-1] == "http://m/debian"


def test_package_list_comments(tmp_path: Path):
    f = tmp_path / "p.txt"
    f.write_text("# c\na b  # trailing\n\nc\n")
    assert read_packages(f) == ("a", "b", "c")
