"""Bootstrap a base stage without any ISO: mmdebstrap, configure in chroot, mke2fs -d, qcow2.

The result is a root file system image (no partition table, no bootloader)
plus the kernel and initrd to boot it directly, which is what every later
stage and the final image use.

No root needed: mmdebstrap runs in unshare mode (a user namespace with the
user's subordinate ids from /etc/subuid and /etc/subgid; as root, only a
mount namespace) and writes a tarball whose owners are right. The tarball is
unpacked and turned into ext4 under ``fakeroot``, which keeps those owners
for ``mke2fs -d``: files of root in the image belong to root whoever built
it, and every file left on the host belongs to the user who built it. Root
takes the same path, so the image does not depend on who built it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vaultdoit import proc
from vaultdoit.errors import ArtifactError, VaultError

SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
SUBID_HINT = "run ./scripts/setup (it adds them with sudo usermod --add-subuids/--add-subgids)"


@dataclass(frozen=True)
class BootstrapSpec:
    """Everything that decides a bootstrapped base image."""

    name: str
    suite: str
    packages: tuple[str, ...]
    configure: Path  # shell script run inside the chroot
    disk_size: str
    output: Path
    kernel: Path
    initrd: Path
    user: str
    build_pubkey: Path
    mirror: str | None = None  # None: mmdebstrap's own default
    apt_proxy: str | None = None  # used during the bootstrap only, never left in the image


def read_packages(path: Path) -> tuple[str, ...]:
    """One package per line; '#' starts a comment."""
    names: list[str] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.extend(line.split())
    return tuple(names)


def mmdebstrap_argv(spec: BootstrapSpec, tarball: Path) -> list[str]:
    """The mmdebstrap command for ``spec`` writing ``tarball``; configuration runs as a customize hook.

    Unshare mode for everyone: as a normal user it needs no privilege beyond
    newuidmap's; as root it only adds a mount namespace (measured no slower
    than root mode, see docs/benchmarks.md).
    """
    argv = [
        "mmdebstrap", "--mode=unshare", "--variant=apt",
        "--include=" + ",".join(spec.packages),
        # Snapshot mirrors and slow clocks must not break the build.
        "--aptopt=Acquire::Check-Valid-Until \"false\"",
        f"--customize-hook=copy-in {spec.configure} /tmp",
        f"--customize-hook=chroot \"$1\" /bin/sh -eu /tmp/{spec.configure.name}",
        f"--customize-hook=rm -f \"$1/tmp/{spec.configure.name}\"",
    ]
    if spec.apt_proxy:
        argv.append(f"--aptopt=Acquire::http::Proxy \"{spec.apt_proxy}\"")
    # mmdebstrap saves every --aptopt in 99mmdebstrap inside the image: the build's
    # proxy (and relaxed checks) must not stay there.
    argv.append('--customize-hook=rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"')
    argv += [spec.suite, str(tarball)]
    if spec.mirror:
        argv.append(spec.mirror)
    return argv


def _boot_file(rootdir: Path, pattern: str) -> Path:
    found = sorted((rootdir / "boot").glob(pattern))
    if not found:
        raise ArtifactError(f"no {pattern} in the bootstrapped root", file=rootdir / "boot",
                            hint="include a kernel package (linux-image-cloud-amd64) and initramfs-tools")
    return found[-1]


def check_subordinate_ids(user: str | None = None, files: tuple[Path, ...] = SUBID_FILES) -> None:
    """Refuse early (not after minutes of mmdebstrap) when a normal user has no subordinate ids.

    mmdebstrap looks ``user`` up by name in both files; root needs none.
    """
    if user is None:
        if os.geteuid() == 0:
            return
        user = pwd.getpwuid(os.geteuid()).pw_name
    proc.find_tool("newuidmap")
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            lines = []
        if not any(line.split(":", 1)[0] == user and line.count(":") == 2 for line in lines):
            raise VaultError(f"no subordinate ids for user {user}: mmdebstrap cannot build the base "
                             "without root", file=path, hint=SUBID_HINT)


# Unpack, then fill the file system, in ONE fakeroot session: its saved state (-s/-i) keeps
# owners and modes but not extended attributes (the ACLs of /var/log/journal). A fixed
# script; every value reaches it as an argument, never as shell text.
MKFS_SCRIPT = 'tar -C "$3" --same-owner --same-permissions --numeric-owner --xattrs "--xattrs-include=*" ' \
              '-xf "$4" && exec "$2" -q -F -t ext4 -L root -d "$3" "$5" "$6"'


def mkfs_argv(tarball: Path, tree: Path, raw: Path, size: str) -> list[str]:
    """Unpack ``tarball`` into the empty folder ``tree`` and make the ext4 image ``raw`` from it."""
    return ["fakeroot", "--", "/bin/sh", "-c", MKFS_SCRIPT, "mkfs", proc.find_tool("tar"), proc.find_tool("mke2fs"),
            str(tree), str(tarball), str(raw), size]


def make_filesystem(tarball: Path, raw: Path, size: str, *, scratch: Path, logfile: Path) -> Path:
    """An ext4 image at ``raw`` with the files, owners and ACLs of ``tarball``; return the unpacked tree.

    fakeroot records the owners tar sets (and device nodes) without root and
    hands them to ``mke2fs -d``, which fills the file system from a folder:
    no loop device, no mount.
    """
    tree = scratch / "tree"
    tree.mkdir()
    proc.run(mkfs_argv(tarball, tree, raw, size), logfile=logfile)
    return tree


def build(spec: BootstrapSpec, *, workdir: Path, logfile: Path) -> None:
    """Build the base image into a scratch folder, then rename the results into place."""
    check_subordinate_ids()
    # An mmdebstrap or a VM left running by a killed build would go on using these.
    proc.ensure_unused(spec.output.parent, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec.output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=workdir))
    try:
        tarball = scratch / "root.tar"
        env = {
            "VAULT_USER": spec.user,
            "VAULT_BUILD_PUBKEY": spec.build_pubkey.read_text().strip(),
        }
        # mmdebstrap fills its own temporary folder ($TMPDIR, else /tmp; in unshare mode the
        # namespace's root must be able to write there) and removes it itself, even on failure.
        proc.run(mmdebstrap_argv(spec, tarball), logfile=logfile, env=env, echo=True)
        raw = scratch / "disk.raw"
        tree = make_filesystem(tarball, raw, spec.disk_size, scratch=scratch, logfile=logfile)
        tarball.unlink()
        kernel = scratch / "vmlinuz"
        initrd = scratch / "initrd.img"
        shutil.copyfile(_boot_file(tree, "vmlinuz-*"), kernel)
        shutil.copyfile(_boot_file(tree, "initrd.img-*"), initrd)
        shutil.rmtree(tree)
        image = scratch / spec.output.name
        proc.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)],
                 logfile=logfile)
        raw.unlink()
        # Image last: a kernel/initrd pair is only ever next to the image built with it.
        for src, dst in ((kernel, spec.kernel), (initrd, spec.initrd), (image, spec.output)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
