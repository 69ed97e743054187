"""Rebuild only what changed: doit itself run twice and after edits.

A fake `packer` (tests/fakes/packer) keeps this fast; it makes real qcow2
images with the real qemu-img. The real end-to-end build is in test_e2e.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import ran_tasks, run_doit
from vaultdoit.plan import load_project

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def built(log: Path) -> list[str]:
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


def doit(root: Path, env: dict[str, str], *args: str) -> set[str]:
    return ran_tasks(run_doit(root, "--reporter=json", *args, env=env).stdout)


def test_builds_once_then_only_what_changed(team):
    root, env, log = team
    assert doit(root, env, "final_image") == {"stage:base", "stage:mid", "stage:top", "final_image"}
    assert built(log) == ["base", "mid", "top"]
    final = root / "build/final/team.qcow2"
    assert final.is_file() and (root / "build/final/team.qcow2.sha256").is_file()
    # The flatten records the image's digest: the boot test's check of it hashes nothing again.
    from vaultdoit.checker import DigestCache

    shipped = (root / "build/final/team.qcow2.sha256").read_text().split()[0]
    assert DigestCache(root / "build/.vaultdoit/digests.json").lookup(final, final.stat()) == f"sha256:{shipped}"
    images = {n: root / f"build/stages/{n}/{n}.qcow2" for n in ("base", "mid", "top")}
    mtimes = {n: p.stat().st_mtime_ns for n, p in images.items()}

    # Nothing changed: nothing runs.
    assert doit(root, env, "final_image") == set()
    assert built(log) == []

    # Touching a source without changing it rebuilds nothing (content checks).
    os.utime(root / "ansible/top.yml")
    assert doit(root, env, "final_image") == set()

    # A file only the top stage uses.
    with open(root / "ansible/roles/app/files/app.sh", "a") as fh:
        fh.write("echo changed\n")
    assert doit(root, env, "final_image") == {"stage:top", "final_image"}
    assert built(log) == ["top"]
    assert images["base"].stat().st_mtime_ns == mtimes["base"]
    assert images["mid"].stat().st_mtime_ns == mtimes["mid"]

    # A file of the base stage rebuilds everything above it.
    (root / "ansible/roles/common/templates/common.conf.j2").write_text("common=2\n")
    assert doit(root, env, "final_image") == {"stage:base", "stage:mid", "stage:top", "final_image"}
    assert built(log) == ["base", "mid", "top"]

    # An unrelated file rebuilds nothing.
    (root / "docs/notes.md").write_text("more notes\n")
    assert doit(root, env, "final_image") == set()


def test_backing_references_are_relative(team):
    root, env, _ = team
    doit(root, env, "final_image")
    from vaultdoit import qemu_img

    assert qemu_img.backing_of(root / "build/stages/mid/mid.qcow2") == "../base/base.qcow2"
    assert qemu_img.backing_of(root / "build/stages/top/top.qcow2") == "../mid/mid.qcow2"
    # The whole build folder can move.
    moved = root.parent / "moved"
    shutil.copytree(root / "build", moved)
    chain = qemu_img.info(moved / "stages/top/top.qcow2", chain=True)["chain"]
    assert len(chain) == 3


def test_failed_build_keeps_the_previous_image(team):
    root, env, log = team
    doit(root, env, "final_image")
    top = root / "build/stages/top/top.qcow2"
    before = top.read_bytes()
    with open(root / "ansible/roles/app/files/app.sh", "a") as fh:
        fh.write("echo again\n")
    proc = run_doit(root, "final_image", env={**env, "FAKE_PACKER_FAIL": "top"}, check=False)
    assert proc.returncode != 0
    assert "command failed with exit code 1: packer build" in proc.stderr + proc.stdout
    assert top.read_bytes() == before, "the previous good image must be intact"
    assert not list(top.parent.parent.glob(".top.vaultdoit-prev"))
    # The change is still pending: the next run rebuilds it.
    assert doit(root, env, "final_image") == {"stage:top", "final_image"}


def test_settings_change_rebuilds_only_affected_stage(team):
    root, env, log = team
    doit(root, env, "final_image")
    built(log)
    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text().replace("flavour=mid", "flavour=mid2"))
    # Templates count by resolved settings: only mid changed, so mid and what is above it run.
    assert doit(root, env, "final_image") == {"stage:mid", "stage:top", "final_image"}
    assert built(log) == ["mid", "top"]
    # Reformatting a template changes no setting: nothing runs.
    layers.write_text("# a comment\n" + layers.read_text())
    assert doit(root, env, "final_image") == set()


def test_memory_is_not_part_of_the_key(team):
    root, env, log = team
    doit(root, env, "final_image")
    (root / "vault.toml").write_text("[variables]\nmemory = 2048\n")
    assert doit(root, env, "final_image") == set()


def test_compression_setting_reruns_only_the_final_image(team):
    root, env, log = team
    doit(root, env, "final_image")
    built(log)
    (root / "vault.toml").write_text('[final]\ncompression = "zlib"\n')
    assert doit(root, env, "final_image") == {"final_image"}
    assert built(log) == []
    from vaultdoit import qemu_img

    info = qemu_img.info(root / "build/final/team.qcow2")
    assert info["format-specific"]["data"]["compression-type"] == "zlib"


def test_interrupted_stage_is_rebuilt_and_restored(team):
    """A hard kill leaves the marker: the next run puts the old image back and rebuilds."""
    root, env, log = team
    doit(root, env, "final_image")
    project = load_project(root)
    top = project.stage("top")
    from vaultdoit.paths import building_marker

    # What a SIGKILL in the middle of `packer build` leaves behind.
    folder = top.output.parent
    prev = folder.with_name(f".{folder.name}.vaultdoit-prev")
    folder.rename(prev)
    folder.mkdir()
    top.output.write_bytes(b"partial")
    building_marker(project.config.state_dir, top.id).write_text("{}")
    built(log)
    assert doit(root, env, "final_image") == {"stage:top", "final_image"}
    assert built(log) == ["top"]
    assert not prev.exists()
    assert top.output.read_bytes()[:4] == b"QFI\xfb"
