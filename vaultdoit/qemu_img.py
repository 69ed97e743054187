"""qemu-img operations on stage images (info, overlays, relative rebasing, checks)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vaultdoit import proc
from vaultdoit.errors import ArtifactError


def info(image: Path, *, chain: bool = False) -> dict[str, Any]:
    """``qemu-img info --output=json`` of ``image`` (``-U``: never blocked by a running VM)."""
    argv = ["qemu-img", "info", "-U", "--output=json"]
    if chain:
        argv.append("--backing-chain")
    out = proc.run([*argv, str(image)], capture=True)
    data = json.loads(out)
    return {"chain": data} if chain else data


def backing_of(image: Path) -> str | None:
    """The backing file reference exactly as written in the image header, or None."""
    value = info(image).get("backing-filename")
    return str(value) if value else None


def create_overlay(image: Path, parent: Path, *, logfile: Path | None = None) -> None:
    """Create ``image`` as a qcow2 overlay on ``parent`` with a relative backing reference."""
    rel = os.path.relpath(parent, image.parent)
    proc.run(["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", rel, str(image)],
             logfile=logfile, cwd=image.parent)


def rebase_relative(image: Path, parent: Path, *, logfile: Path | None = None) -> str:
    """Point ``image``'s backing reference at ``parent`` by a relative path (no data copied).

    Relative references let ``build/`` be moved, cached in CI or shared.
    """
    rel = os.path.relpath(parent, image.parent)
    # -u: unsafe rebase only rewrites the header; the parent's content is the same file.
    proc.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", rel, str(image)],
             logfile=logfile)
    return rel


def check_stage(image: Path, parent: Path | None, fmt: str = "qcow2") -> None:
    """Raise ArtifactError unless ``image`` exists with the format and backing file promised
    (``parent``: the parent stage's image, or the downloaded image a first stage is built on)."""
    if not image.is_file():
        raise ArtifactError("the build finished but did not produce this image", file=image,
                            hint="check output_directory/vm_name in the template and the build log")
    data = info(image)
    if data.get("format") != fmt:
        raise ArtifactError(f"image format is {data.get('format')!r}, expected {fmt!r}", file=image,
                            hint='set format = "qcow2" in the template')
    backing = data.get("full-backing-filename") or data.get("backing-filename")
    if parent is None:
        if backing:
            raise ArtifactError(f"unexpected backing file {backing}", file=image)
        return
    if not backing:
        raise ArtifactError(f"image has no backing file, expected {parent}", file=image,
                            hint="set use_backing_file = true and disk_image = true in the template")
    resolved = Path(backing) if os.path.isabs(backing) else (image.parent / backing)
    if resolved.resolve() != parent.resolve():
        raise ArtifactError(f"backing file is {backing}, expected {parent}", file=image,
                            hint="the template's iso_url must name the parent stage's image")


def check(image: Path, *, logfile: Path | None = None) -> None:
    """``qemu-img check``: raises CommandFailed on corruption or leaks."""
    proc.run(["qemu-img", "check", "-q", str(image)], logfile=logfile)
