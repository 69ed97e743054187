"""Offline leak scan of a disk image: nothing of the build may be in what ships.

The image is never booted. ``qemu-img convert`` makes a sparse raw copy in a
private temporary folder (a raw image is read in place), ``sfdisk --json``
reads its partition table if it has one, ``blkid`` names each volume's file
system, and ``debugfs`` (ext2/3/4) or ``mcopy`` (FAT) copies its files out,
without mounting anything; ``leaks.check_tree`` then reads every regular
file. The temporary folder is removed afterwards. A volume that cannot be
read (LVM, LUKS, an unknown file system) is reported, never passed silently.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vaultdoit import proc
from vaultdoit.errors import CommandFailed, ScanError, VaultError
from vaultdoit.leaks import Finding, Secrets, check_tree

BIOS_BOOT = "21686148-6453-6F6E-6574-656564454649"  # GPT BIOS boot partition: GRUB's code, no files
EXTENDED = {"5", "f", "85"}  # MBR containers of logical partitions (listed on their own)
EXT_FS = {"ext2", "ext3", "ext4"}
FAT_FS = {"vfat", "msdos"}
WHAT = {  # blkid TYPE -> words for "cannot read" lines
    "LVM2_member": "LVM physical volume",
    "crypto_LUKS": "LUKS encrypted volume",
    "swap": "swap space",
    "linux_raid_member": "RAID member",
    "zfs_member": "ZFS pool member",
}


@dataclass
class Report:
    """The outcome of a scan."""

    image: Path
    findings: list[Finding] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one line per volume not scanned
    notes: list[str] = field(default_factory=list)
    files: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.findings and not self.unreadable

    def summary(self) -> str:
        parts = []
        if self.findings:
            parts.append(f"{len(self.findings)} finding{'s' if len(self.findings) != 1 else ''}")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} volume{'s' if len(self.unreadable) != 1 else ''} not scanned")
        return f"scanned {self.files} files in {self.seconds:.1f} s: {', '.join(parts) or 'clean'}"


@dataclass(frozen=True)
class Volume:
    """A file system to read: the whole disk or one partition."""

    name: str  # "" or "partition N"
    offset: int  # bytes into the raw disk
    size: int | None
    type: str | None  # blkid's TYPE
    part_type: str = ""  # the partition table's type code


# --- reading the disk -------------------------------------------------------------------------


def _raw_copy(image: Path, scratch: Path) -> Path:
    """The image as a raw file: itself if it is raw, else a sparse copy in ``scratch``."""
    try:
        info = json.loads(proc.run(["qemu-img", "info", "-U", "--output=json", str(image)], capture=True))
    except VaultError as err:
        raise ScanError("qemu-img cannot read this file as a disk image", file=image,
                        hint="give a qcow2 or raw image") from err
    if info.get("format") == "raw":
        return image
    raw = scratch / "disk.raw"
    # -U: a running boot test holds a lock on the image; we only read it.
    proc.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw)])
    return raw


def _probe(raw: Path, offset: int = 0, size: int | None = None) -> dict[str, str]:
    """blkid's low-level probe of the bytes at ``offset``: TYPE, PTTYPE, LABEL... ({} if none)."""
    argv = ["blkid", "-p", "-o", "export", "-O", str(offset)]
    if size is not None:
        argv += ["-S", str(size)]
    code, out = proc.check_output([*argv, str(raw)])
    if code != 0:  # 2: nothing recognised
        return {}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def volumes(raw: Path) -> list[Volume]:
    """The file systems of a raw disk: its partitions, or the disk itself without a table."""
    code, out = proc.check_output(["sfdisk", "--json", str(raw)])
    if code != 0:  # no partition table: a bare file system (or nothing readable)
        probe = _probe(raw)
        return [Volume("", 0, None, probe.get("TYPE") or (f"{probe['PTTYPE']} table" if "PTTYPE" in probe else None))]
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    device = table.get("device", str(raw))
    found = []
    for part in table.get("partitions", []):
        number = part["node"][len(device):].lstrip("p") if part["node"].startswith(device) else part["node"]
        ptype = str(part.get("type", "")).lower()
        if table.get("label") == "dos" and ptype in EXTENDED:
            continue
        offset, size = int(part["start"]) * sector, int(part["size"]) * sector
        found.append(Volume(f"partition {number}", offset, size, _probe(raw, offset, size).get("TYPE"), ptype))
    return found


def _extract_ext(raw: Path, volume: Volume, dest: Path, log: Path) -> str | None:
    """Copy an ext2/3/4 file system's files into ``dest`` with debugfs; return a problem or None."""
    device = f"{raw}?offset={volume.offset}" if volume.offset else str(raw)
    proc.run(["debugfs", "-R", f"rdump / {dest}", device], logfile=log)
    # debugfs reports trouble on stderr but exits 0; ownership is only kept when run as root.
    problems = [line for line in log.read_text(errors="replace").splitlines()
                if line and not line.startswith(("+ ", "debugfs ")) and "while changing ownership" not in line]
    if problems:
        return problems[0]
    return None


def _extract_fat(raw: Path, volume: Volume, dest: Path, log: Path) -> str | None:
    """Copy a FAT file system's files into ``dest`` with mtools; return a problem or None."""
    try:
        # MTOOLS_SKIP_CHECK: images made by other tools often have odd geometries.
        proc.run(["mcopy", "-s", "-n", "-p", "-m", "-i", f"{raw}@@{volume.offset}", "::/", str(dest)],
                 logfile=log, env={"MTOOLS_SKIP_CHECK": "1"})
    except CommandFailed as err:
        lines = err.tail.strip().splitlines()
        return lines[-1] if lines else str(err)
    return None


def _make_readable(tree: Path) -> None:
    """Without root, copied files keep modes such as 0000 (/etc/shadow on some systems):
    give ourselves read access so they are scanned, and write access so they can be removed."""
    if os.geteuid() == 0:
        return
    tree.chmod(0o700)
    for folder, dirs, files in os.walk(tree):
        for name in dirs:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRUSR)


# --- the scan -----------------------------------------------------------------------------------


def _describe(volume: Volume) -> str:
    if volume.type is None:
        return "no file system found"
    return WHAT.get(volume.type, f"{volume.type} file system")


def scan(image: Path, secrets: Secrets, *, tmpdir: Path | None = None) -> Report:
    """Scan ``image`` (qcow2, raw, or any format qemu-img reads) for leaks of the build."""
    try:
        with image.open("rb"):
            pass
    except OSError as exc:
        raise ScanError(f"cannot read the image: {exc.strerror}", file=image,
                        hint="give the path of a qcow2 or raw image you can read") from None
    start = time.monotonic()
    report = Report(image=image)
    try:
        scratch = Path(tempfile.mkdtemp(prefix="vaultdoit-scan-", dir=tmpdir))  # mode 0700: ours only
    except OSError as exc:
        raise ScanError(f"cannot create a temporary folder: {exc.strerror}", file=tmpdir or tempfile.gettempdir(),
                        hint="pass --tmpdir with room for the image's used size twice") from None
    unjudged = 0
    package_keys: list[str] = []
    try:
        raw = _raw_copy(image, scratch)
        for number, volume in enumerate(volumes(raw)):
            where = f"{image}{' ' + volume.name if volume.name else ''}"
            if volume.type is None and volume.part_type.upper() == BIOS_BOOT:
                report.notes.append(f"{where}: BIOS boot partition (boot loader code, no files): skipped")
                continue
            if volume.type not in EXT_FS | FAT_FS:
                report.unreadable.append(f"cannot read {where} ({_describe(volume)}): not scanned")
                continue
            dest = scratch / f"v{number}"
            dest.mkdir()
            log = scratch / f"v{number}.log"
            extract = _extract_ext if volume.type in EXT_FS else _extract_fat
            problem = extract(raw, volume, dest, log)
            if problem:
                report.unreadable.append(f"cannot read {where} ({volume.type}): {problem}: not scanned")
                continue
            _make_readable(dest)
            result = check_tree(dest, secrets, volume.name)
            report.findings += result.findings
            report.files += result.files
            unjudged += result.unjudged_keys
            package_keys += result.package_keys
            shutil.rmtree(dest)
    except OSError as exc:
        hint = "pass --tmpdir on a disk with room for the image's used size twice" \
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "run the scan as root"
        raise ScanError(f"scan failed: {exc.strerror}: {exc.filename}", file=image, hint=hint) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if unjudged:
        report.notes.append(f"{unjudged} authorized key{'s' if unjudged != 1 else ''} not judged: "
                            "no access key given (--access-key)")
    if package_keys:
        report.notes.append(f"private key blocks in {len(package_keys)} unmodified package file"
                            f"{'s' if len(package_keys) != 1 else ''} (test data, e.g. {package_keys[0]}): not reported")
    report.findings.sort()
    report.seconds = time.monotonic() - start
    return report
