"""What a built stage is made of on disk, so it can be moved between machines as a whole.

A stage is its image (an overlay whose backing reference is relative), its
other outputs (a bootstrapped base's kernel and initrd), its build record
(owned.MARKER) and the reports its build left in the profile's reports
folder (package lists the manifest reads). The remote cache and cache
archives move these files; receiving code writes each to a temporary name
beside its place and renames it there only once it is verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vaultdoit import checker

PIECE = 2**20  # read and write in pieces of this size: memory stays flat whatever the file size
REPORT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")


def image_digest(image: Path) -> str | None:
    """sha256 of a stage image as its build record says ("sha256:<hex>"), or None."""
    from vaultdoit import owned

    digest = (owned.read_marker(image.parent) or {}).get("image_sha256")
    return digest if isinstance(digest, str) else None


def reports_snapshot(folder: Path | None) -> dict[str, str]:
    """The report files in ``folder`` (plain files, by name) with their sha256 digests.

    A stage's record keeps the reports folder as its build left it: a stage
    brought from elsewhere restores them, and the stages after it (built or
    brought in chain order) overwrite what they report themselves.
    """
    if folder is None or not folder.is_dir():
        return {}
    found = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False) and REPORT_NAME.fullmatch(entry.name):
            found[entry.name] = checker.hash_file(entry.path)[0]
    return found


def temporary(target: Path, purpose: str) -> Path:
    """The name a file is received under before it replaces ``target`` (same folder: rename is atomic)."""
    return target.with_name(f".{target.name}.vaultdoit-{purpose}")


class Receiver:
    """Writes one file from pieces, hashing as it goes; ``digest`` is "sha256:<hex>" when done."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, piece: bytes) -> None:
        self.out.write(piece)
        self.hash.update(piece)
        self.size += len(piece)

    @property
    def digest(self) -> str:
        return f"sha256:{self.hash.hexdigest()}"


def read_range(path: Path, offset: int, size: int) -> Iterator[bytes]:
    """``size`` bytes of ``path`` from ``offset``, in pieces (a short file is an OSError)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = size
        while left:
            piece = fh.read(min(PIECE, left))
            if not piece:
                raise OSError(f"{path} is shorter than expected ({offset + size - left} of {offset + size} bytes)")
            left -= len(piece)
            yield piece


def range_digest(path: Path, offset: int, size: int) -> str:
    """sha256 of ``size`` bytes of ``path`` from ``offset``."""
    digest = hashlib.sha256()
    for piece in read_range(path, offset, size):
        digest.update(piece)
    return f"sha256:{digest.hexdigest()}"


def discard(*paths: Path) -> None:
    """Remove temporary files of a transfer that did not complete."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def install(stage_output: Path, marker: dict[str, object], received: dict[Path, Path]) -> None:
    """Put verified received files in place (``received``: target -> temporary file), then the record.

    The old record goes first: until the new one is written the folder holds
    no valid stage, so an interruption in between means a rebuild, never a
    stage taken for what it is not.
    """
    from vaultdoit import owned

    folder = stage_output.parent
    (folder / owned.MARKER).unlink(missing_ok=True)
    for target, tmp in received.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    owned.write_marker(folder, dict(marker))
