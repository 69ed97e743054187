"""Flattening with the real qemu-img: standalone output, compression, sha256, atomic replacement."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vaultdoit import final, qemu_img
from vaultdoit.config import FinalConfig
from vaultdoit.errors import CommandFailed

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")]


def make_chain(folder: Path) -> Path:
    """base <- mid <- top, each with some data, relative backing references."""
    base = folder / "base/base.qcow2"
    base.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4M", str(base)], check=True, stdout=subprocess.DEVNULL)
    parent = base
    for name, pattern in (("mid", 2), ("top", 3)):
        image = folder / f"{name}/{name}.qcow2"
        image.parent.mkdir(parents=True)
        qemu_img.create_overlay(image, parent)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {pattern}M 1M", str(image)],
                       check=True, stdout=subprocess.DEVNULL)
        parent = image
    return parent


@pytest.mark.parametrize("compression", ["zstd", "zlib", "none"])
def test_flatten_makes_a_standalone_checked_image(tmp_path: Path, compression: str):
    top = make_chain(tmp_path / "stages")
    assert qemu_img.backing_of(top) == "../mid/mid.qcow2"
    out = tmp_path / "final/image.qcow2"
    manifest = lambda image, digest: json.dumps({"sha256": digest})  # noqa: E731
    digest = final.flatten(top, out, kernel=None, initrd=None, cfg=FinalConfig(compression=compression),
                           logfile=tmp_path / "log", manifest=manifest)
    info = qemu_img.info(out)
    assert "backing-filename" not in info
    if compression != "none":
        assert info["format-specific"]["data"]["compression-type"] == compression
    qemu_img.check(out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    assert (tmp_path / "final/image.qcow2.sha256").read_text() == f"{digest}  image.qcow2\n"
    assert json.loads(final.manifest_path(out).read_text()) == {"sha256": digest}
    # Same guest data as the chain.
    subprocess.run(["qemu-img", "compare", "-q", str(top), str(out)], check=True)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_failed_flatten_keeps_the_previous_image(tmp_path: Path):
    top = make_chain(tmp_path / "stages")
    out = tmp_path / "final/image.qcow2"
    final.flatten(top, out, kernel=None, initrd=None, cfg=FinalConfig(), logfile=tmp_path / "log")
    before = out.read_bytes()
    # Break the chain: the middle image disappears.
    (tmp_path / "stages/mid/mid.qcow2").unlink()
    with pytest.raises(CommandFailed) as info:
        final.flatten(top, out, kernel=None, initrd=None, cfg=FinalConfig(), logfile=tmp_path / "log")
    assert "qemu-img convert" in str(info.value)
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["image.qcow2", "image.qcow2.sha256"]


def test_check_stage_rejects_missing_wrong_backing_and_format(tmp_path: Path):
    from vaultdoit.errors import ArtifactError

    top = make_chain(tmp_path)
    mid = tmp_path / "mid/mid.qcow2"
    qemu_img.check_stage(top, mid)
    with pytest.raises(ArtifactError, match="did not produce this image"):
        qemu_img.check_stage(tmp_path / "nothing.qcow2", mid)
    with pytest.raises(ArtifactError, match="backing file is"):
        qemu_img.check_stage(top, tmp_path / "base/base.qcow2")
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"\0" * 65536)
    with pytest.raises(ArtifactError, match="format is 'raw'"):
        qemu_img.check_stage(raw, None)
