"""The final image: flatten the stage chain into one standalone, compressed qcow2."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vaultdoit import progress, proc, qemu_img
from vaultdoit.config import FinalConfig
from vaultdoit.errors import ArtifactError
from vaultdoit.checker import hash_file


def convert_argv(top: Path, out: Path, cfg: FinalConfig) -> list[str]:
    """``qemu-img convert`` that flattens ``top`` and its backing chain into ``out``."""
    argv = ["qemu-img", "convert", "-p", "-O", "qcow2"]
    if cfg.compression != "none":
        argv += ["-c", "-o", f"compression_type={cfg.compression}"]
    # -W: out-of-order writes let the coroutines compress in parallel.
    argv += ["-W", "-m", str(max(1, min(cfg.coroutines, 16)))]
    argv += [str(top), str(out)]
    return argv


def _publish(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


def flatten(top: Path, out: Path, *, kernel: Path | None, initrd: Path | None, cfg: FinalConfig,
            logfile: Path, manifest: Callable[[Path, str], str] | None = None) -> str:
    """Write ``out`` (+ kernel, initrd, .sha256, .manifest.json) from the chain ending at
    ``top``; return its sha256. ``manifest(image, sha256)`` returns the manifest's text.

    Everything is written to a scratch folder beside ``out`` and renamed into
    place only after ``qemu-img check`` passed, so a failure leaves the
    previous good image untouched.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.stem}-", dir=out.parent))
    try:
        tmp = scratch / out.name
        with progress.meter(f"flatten into {out.name}", unit="%") as meter:
            proc.run(convert_argv(top, tmp, cfg), logfile=logfile, echo=True, progress=meter.percent_line)
        qemu_img.check(tmp, logfile=logfile)
        data = qemu_img.info(tmp)
        if data.get("backing-filename"):
            raise ArtifactError("flattened image still has a backing file", file=tmp)
        digest = hash_file(tmp)[0].split(":", 1)[1]
        (scratch / "sha256").write_text(f"{digest}  {out.name}\n")
        pairs: list[tuple[Path, Path]] = []
        if kernel is not None:
            shutil.copyfile(kernel, scratch / "vmlinuz")
            pairs.append((scratch / "vmlinuz", out.with_suffix(".vmlinuz")))
        if initrd is not None:
            shutil.copyfile(initrd, scratch / "initrd.img")
            pairs.append((scratch / "initrd.img", out.with_suffix(".initrd.img")))
        if manifest is not None:
            (scratch / "manifest.json").write_text(manifest(tmp, digest))
            pairs.append((scratch / "manifest.json", manifest_path(out)))
        pairs += [(tmp, out), (scratch / "sha256", out.with_name(out.name + ".sha256"))]
        for src, dst in pairs:
            _publish(src, dst)
        return digest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
