"""Build state that moves: copies without mtimes, a second clone, lost records, cache archives.

Stages are built by the fake packer (real qcow2 images made with qemu-img).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import VENV_BIN, clone, fake_packer_env, packer_runs, ran_tasks, run_doit

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

STAGES = ["base", "mid", "top"]



def doit(root: Path, work: Path, *args: str) -> set[str]:
    return ran_tasks(run_doit(root, "--reporter=json", *(args or ("final_image",)),
                              env=fake_packer_env(root, work)).stdout)


def vaultdoit(root: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(VENV_BIN / "vaultdoit"), "-C", str(root), *args], capture_output=True, input=stdin)


def status(root: Path) -> dict[str, str]:
    lines = vaultdoit(root, "status").stdout.decode().splitlines()
    return {line.split()[0]: line.split(None, 1)[1] for line in lines}


@pytest.fixture
def built(tmp_path: Path) -> Path:
    root = clone(tmp_path, "first")
    doit(root, tmp_path / "fake")
    assert packer_runs(tmp_path / "fake") == STAGES
    return root


def test_a_copy_that_does_not_keep_mtimes_is_a_no_op(built: Path, tmp_path: Path):
    time.sleep(0.01)  # every copied file gets a new mtime
    copy = tmp_path / "copy" / "team"
    copy.parent.mkdir()
    subprocess.run(["cp", "-r", str(built), str(copy)], check=True)
    assert (copy / "ansible/top.yml").stat().st_mtime != (built / "ansible/top.yml").stat().st_mtime
    assert doit(copy, tmp_path / "fake2") == set()
    assert packer_runs(tmp_path / "fake2") == []


def test_a_second_clone_given_the_first_ones_build_folder_is_a_no_op(built: Path, tmp_path: Path):
    second = clone(tmp_path, "elsewhere/deeper")  # its own checkout: sources with their own mtimes
    shutil.copytree(built / "build", second / "build", symlinks=True)
    assert doit(second, tmp_path / "fake2") == set()
    assert all(status(second)[f"stage:{s}"] == "up to date" for s in STAGES)
    assert status(second)["final_image"] == "up to date"


def test_reset_dep_records_no_stage_settings_but_repair_does(built: Path, tmp_path: Path):
    db = built / "build/.vaultdoit/doit.sqlite3"
    db.unlink()  # a CI cache restored without doit's database, or a database lost
    reset = run_doit(built, "reset-dep", env=fake_packer_env(built, tmp_path / "fake"))
    assert "processed stage:base" in reset.stdout
    # doit's reset-dep saves file states only: the stages' settings are missing, so all would rebuild.
    after_reset = status(built)
    assert all(after_reset[f"stage:{s}"].startswith("will run: no settings recorded") for s in STAGES)
    repaired = vaultdoit(built, "repair")
    assert repaired.returncode == 0
    assert all(status(built)[f"stage:{s}"] == "up to date" for s in STAGES)
    assert doit(built, tmp_path / "fake") == set()
    assert packer_runs(tmp_path / "fake") == []


def test_export_then_import_into_a_clone_elsewhere_is_a_no_op(built: Path, tmp_path: Path):
    archive = tmp_path / "cache.tar"
    out = vaultdoit(built, "cache", "export", str(archive))
    assert out.returncode == 0, out.stderr
    assert b"exported stages: base, mid, top; 4 other files and the dependency records" in out.stdout  # final image, .sha256, manifest, SBOM
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "vaultdoit-archive.json"
    assert "build/stages/top/top.qcow2" in names and "build/final/team.qcow2" in names
    assert not any(n.startswith("build/keys") for n in names)  # keys only with --with-keys

    second = clone(tmp_path, "ci/runner")
    imported = vaultdoit(second, "cache", "import", str(archive))
    assert imported.returncode == 0, imported.stderr
    text = imported.stdout.decode()
    assert "imported stages: base, mid, top; 4 other files" in text
    assert "stage:top: up to date" in text and "final_image: up to date" in text
    assert doit(second, tmp_path / "fake2") == set()
    assert packer_runs(tmp_path / "fake2") == []
    for stage in STAGES:
        image = second / f"build/stages/{stage}/{stage}.qcow2"
        assert image.stat().st_mtime == (built / f"build/stages/{stage}/{stage}.qcow2").stat().st_mtime
        assert not list(image.parent.glob(".*vaultdoit-import"))


def test_import_into_a_project_with_its_own_records_adopts_what_matches(built: Path, tmp_path: Path):
    archive = tmp_path / "cache.tar"
    vaultdoit(built, "cache", "export", str(archive))
    second = clone(tmp_path, "second")
    with open(second / "ansible/roles/app/files/app.sh", "a") as fh:
        fh.write("echo changed here\n")
    doit(second, tmp_path / "fake2", "keys")  # this project already has a database
    imported = vaultdoit(second, "cache", "import", str(archive)).stdout.decode()
    assert "stage:mid: up to date" in imported
    assert "stage:top: will run: its image was built from other inputs" in imported
    assert doit(second, tmp_path / "fake2") == {"stage:top", "final_image"}
    assert packer_runs(tmp_path / "fake2") == ["top"]


def test_a_damaged_image_in_an_archive_is_discarded_and_rebuilt(built: Path, tmp_path: Path):
    archive = tmp_path / "cache.tar"
    vaultdoit(built, "cache", "export", str(archive))
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        member = tar.getmember("build/stages/mid/mid.qcow2")
    data[member.offset_data + member.size // 2] ^= 0xFF  # a damaged CI cache
    archive.write_bytes(bytes(data))
    second = clone(tmp_path, "second")
    imported = vaultdoit(second, "cache", "import", str(archive)).stdout.decode()
    assert "stage mid: its image does not match the digest in its build record, discarded" in imported
    assert "imported stages: base, top" in imported
    assert not (second / "build/stages/mid/mid.qcow2").exists()
    assert doit(second, tmp_path / "fake2") == {"stage:mid", "stage:top", "final_image"}
    assert packer_runs(tmp_path / "fake2") == ["mid", "top"]
    # A project with images of its own that lost its records: the archive brings base and top, its
    # own mid (same key) stays. Neither its mid (an overlay on its own base) nor the archive's top
    # (an overlay on the archive's mid) is taken: same keys, other parent bytes.
    third = clone(tmp_path, "third")
    doit(third, tmp_path / "fake3")
    packer_runs(tmp_path / "fake3")
    (third / "build/.vaultdoit/doit.sqlite3").unlink()
    text = vaultdoit(third, "cache", "import", str(archive)).stdout.decode()
    assert "stage:base: up to date" in text
    for stage in ("mid", "top"):
        assert f"stage:{stage}: will run: its image is an overlay on another image of its parent" in text
    assert doit(third, tmp_path / "fake3") == {"stage:mid", "stage:top", "final_image"}
    assert packer_runs(tmp_path / "fake3") == ["mid", "top"]


def test_archives_stream_through_pipes_compressed(built: Path, tmp_path: Path):
    exported = vaultdoit(built, "cache", "export", "-")
    assert exported.returncode == 0 and b"exported stages" in exported.stderr
    second = clone(tmp_path, "second")
    imported = vaultdoit(second, "cache", "import", "-", stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    assert doit(second, tmp_path / "fake2") == set()

    gz = tmp_path / "cache.tar.gz"
    assert vaultdoit(built, "cache", "export", str(gz)).returncode == 0
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    third = clone(tmp_path, "third")
    assert vaultdoit(third, "cache", "import", str(gz)).returncode == 0
    assert doit(third, tmp_path / "fake3") == set()


def test_an_archive_cannot_write_outside_the_build(built: Path, tmp_path: Path):
    archive = tmp_path / "evil.tar"
    header = json.dumps({"format": 1, "profile": None, "stages": {}, "files": ["../../escape.txt"],
                         "database": None}).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in (("vaultdoit-archive.json", header), ("../../escape.txt", b"x"),
                           ("ansible/top.yml", b"- hosts: all\n"), ("build/final/team.qcow2", b"not an image")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    second = clone(tmp_path, "second")
    before = (second / "ansible/top.yml").read_bytes()
    out = vaultdoit(second, "cache", "import", str(archive))
    assert out.returncode == 0
    text = out.stdout.decode()
    assert "../../escape.txt: not a file of this project's build, skipped" in text
    assert "ansible/top.yml: not a file of this project's build, skipped" in text
    assert not (tmp_path / "escape.txt").exists() and not (second.parent / "escape.txt").exists()
    assert (second / "ansible/top.yml").read_bytes() == before
    # A final image without the stages it comes from is never taken as up to date.
    assert "final_image: will run" in text


def test_an_archive_of_another_profile_is_one_line(built: Path, tmp_path: Path):
    archive = tmp_path / "cache.tar"
    vaultdoit(built, "cache", "export", str(archive))
    other = clone(tmp_path, "other")
    (other / "vault.toml").write_text('profile = "x"\n[profiles.x]\npacker_dir = "packer"\n')
    out = vaultdoit(other, "cache", "import", str(archive))
    assert out.returncode == 2
    assert out.stderr.decode().strip().splitlines() == [
        f"vaultdoit: error: {archive}: the archive holds profile None, not 'x' "
        "(fix: import it into the project it was exported from)"]
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    out = vaultdoit(other, "cache", "import", str(junk))
    assert out.returncode == 2 and "cannot read the archive" in out.stderr.decode()
