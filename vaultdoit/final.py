"""The final image: flatten the stage chain into one standalone, compressed qcow2."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vaultdoit import progress, proc, qemu_img, signing
from vaultdoit.outputs import (checksum_path, initrd_path, kernel_path, manifest_path, sbom_path, signature_path,
                               signed_files)
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


def flatten(top: Path, out: Path, *, kernel: Path | None, initrd: Path | None, cfg: FinalConfig,
            logfile: Path, manifest: Callable[[Path, str], str] | None = None,
            sbom: Callable[[Path, str, dict[str, str]], str] | None = None,
            signing_key: Path | None = None) -> str:
    """Write ``out`` (+ kernel, initrd, .sha256, .manifest.json, .cdx.json, signatures) from the
    chain ending at ``top``; return its sha256.

    ``manifest(image, sha256)`` returns the manifest's text, ``sbom(image, sha256, files)`` the
    SBOM's (``files``: name -> sha256 of the kernel and initrd shipped beside the image). The
    ``.sha256`` file lists the image, kernel and initrd (``sha256sum -c`` checks all three);
    with ``signing_key`` it and the SBOM are signed (see signing.py).

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
        pairs: list[tuple[Path, Path]] = []
        shipped: dict[str, str] = {}
        for source, name, dst in ((kernel, "vmlinuz", kernel_path(out)), (initrd, "initrd.img", initrd_path(out))):
            if source is not None:
                shutil.copyfile(source, scratch / name)
                shipped[dst.name] = hash_file(scratch / name)[0].split(":", 1)[1]
                pairs.append((scratch / name, dst))
        lines = [f"{digest}  {out.name}", *(f"{sha}  {name}" for name, sha in shipped.items())]
        (scratch / "sha256").write_text("\n".join(lines) + "\n")
        if manifest is not None:
            (scratch / "manifest.json").write_text(manifest(tmp, digest))
            pairs.append((scratch / "manifest.json", manifest_path(out)))
        signed = [scratch / "sha256"]
        if sbom is not None:
            (scratch / "cdx.json").write_text(sbom(tmp, digest, shipped))
            signed.append(scratch / "cdx.json")
            pairs.append((scratch / "cdx.json", sbom_path(out)))
        # The checksum file (and its signature) last: it vouches for everything before it.
        finals = [(tmp, out), (scratch / "sha256", checksum_path(out))]
        if signing_key is not None:
            for file in signed:
                signature = signing.sign(file, signing_key, logfile=logfile)
                dst = signature_path(dict(pairs + finals)[file])
                (finals if file.name == "sha256" else pairs).append((signature, dst))
        else:
            for stale in signed_files(out):
                # An earlier build's signatures never stay beside files they do not sign.
                signature_path(stale).unlink(missing_ok=True)
        for src, dst in pairs + finals:
            _publish(src, dst)
        return digest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
