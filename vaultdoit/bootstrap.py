"""Bootstrap a base stage without any ISO: mmdebstrap, configure in chroot, mke2fs -d, qcow2.

The result is a root file system image (no partition table, no bootloader)
plus the kernel and initrd to boot it directly, which is what every later
stage and the final image use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vaultdoit import proc
from vaultdoit.errors import ArtifactError


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


def mmdebstrap_argv(spec: BootstrapSpec, rootdir: Path) -> list[str]:
    """The mmdebstrap command for ``spec``; configuration runs as a customize hook."""
    argv = [
        "mmdebstrap", "--mode=root", "--variant=apt",
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
    argv += [spec.suite, str(rootdir)]
    if spec.mirror:
        argv.append(spec.mirror)
    return argv


def _boot_file(rootdir: Path, pattern: str) -> Path:
    found = sorted((rootdir / "boot").glob(pattern))
    if not found:
        raise ArtifactError(f"no {pattern} in the bootstrapped root", file=rootdir / "boot",
                            hint="include a kernel package (linux-image-cloud-amd64) and initramfs-tools")
    return found[-1]


def build(spec: BootstrapSpec, *, workdir: Path, logfile: Path) -> None:
    """Build the base image into a scratch folder, then rename the results into place."""
    # An mmdebstrap or a VM left running by a killed build would go on using these.
    proc.ensure_unused(spec.output.parent, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec.output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=workdir))
    try:
        rootdir = scratch / "root"
        env = {
            "VAULT_USER": spec.user,
            "VAULT_BUILD_PUBKEY": spec.build_pubkey.read_text().strip(),
        }
        proc.run(mmdebstrap_argv(spec, rootdir), logfile=logfile, env=env, echo=True)
        kernel = scratch / "vmlinuz"
        initrd = scratch / "initrd.img"
        shutil.copyfile(_boot_file(rootdir, "vmlinuz-*"), kernel)
        shutil.copyfile(_boot_file(rootdir, "initrd.img-*"), initrd)
        raw = scratch / "disk.raw"
        # mke2fs -d fills the file system from a folder: no loop device, no mount.
        proc.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(rootdir),
                  str(raw), spec.disk_size], logfile=logfile)
        shutil.rmtree(rootdir)
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
