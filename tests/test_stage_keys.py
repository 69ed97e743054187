"""Stage keys are complete and location-free: every file a stage reads is an input,
outputs stay inside the project, and a moved project keeps its build state.

Builds use the fake packer (tests/fakes/packer), which makes real qcow2 images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, VENV_BIN, fake_packer_env, packer_runs, ran_tasks, run_doit
from vaultdoit import keys, owned
from vaultdoit.plan import load_project

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

# Every file of the `inputs` fixture that a setting of its one stage names.
INPUTS = [
    "images/root.qcow2",  # iso_url (a local disk image)
    "http/preseed/preseed.cfg",  # http_directory
    "floppy/a.cfg",  # floppy_files
    "cd/one.txt", "cd/sub/two.txt",  # cd_files (a folder)
    "disks/extra.img",  # qemuargs -drive file=
    "scripts/setup.sh",  # shell script
    "scripts/more.sh",  # shell scripts
    "uploads/tree/nested/file.conf",  # file provisioner, a folder
    "uploads/one.txt",  # file provisioner, a file
    "ansible-local/local.yml", "ansible-local/roles/lr/tasks/main.yml",  # ansible-local playbook_dir
    "ansible/site.yml", "ansible/roles/r1/tasks/main.yml",  # ansible playbook closure
    "vars/extra.yml",  # --extra-vars @file
]


def doit(root: Path, env: dict[str, str], *args: str) -> set[str]:
    return ran_tasks(run_doit(root, "--reporter=json", *args, env=env).stdout)


def vaultdoit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "vaultdoit"), "-C", str(root), *args], capture_output=True, text=True)


@pytest.fixture
def inputs(project_copy, tmp_path: Path):
    root = project_copy("inputs")
    return root, fake_packer_env(root, tmp_path / "fake"), tmp_path / "fake"


def test_every_file_a_setting_names_is_an_input(inputs):
    root, env, _work = inputs
    stage = load_project(root).stage("os")
    assert sorted(keys.relpath(p, root) for p in stage.inputs) == sorted(INPUTS)
    info = run_doit(root, "info", "stage:os", env=env, check=False).stdout
    for name in INPUTS:
        assert name in info


def test_editing_any_input_rebuilds_and_touching_none(inputs):
    root, env, work = inputs
    assert doit(root, env, "final_image") == {"stage:os", "stage:child", "final_image"}
    assert packer_runs(work) == ["os", "child"]
    for name in INPUTS:
        os.utime(root / name)
    (root / "README.md").write_text("an unrelated change\n")
    assert doit(root, env, "final_image") == set()
    for name in INPUTS:
        with open(root / name, "a") as fh:
            fh.write("# changed\n")
        status = vaultdoit(root, "status")
        assert "stage:os" in status.stdout and "will run" in status.stdout.split("stage:os", 1)[1].splitlines()[0], \
            (name, status.stdout)
        assert doit(root, env, "final_image") == {"stage:os", "stage:child", "final_image"}, name
        assert packer_runs(work) == ["os", "child"], name


def test_a_new_file_in_a_folder_input_rebuilds(inputs):
    root, env, work = inputs
    doit(root, env, "final_image")
    packer_runs(work)
    (root / "uploads/tree/added.txt").write_text("new\n")
    assert doit(root, env, "final_image") == {"stage:os", "stage:child", "final_image"}
    (root / "uploads/tree/added.txt").unlink()
    assert doit(root, env, "final_image") == {"stage:os", "stage:child", "final_image"}


def test_missing_input_lists_and_fails_only_its_stage(inputs):
    root, env, work = inputs
    (root / "scripts/setup.sh").unlink()
    listing = run_doit(root, "list", env=env)
    assert "stage:os" in listing.stdout
    explained = vaultdoit(root, "explain", "stage:os")
    assert explained.returncode == 0 and "input missing: scripts/setup.sh" in explained.stdout
    build = run_doit(root, "final_image", env=env, check=False)
    assert build.returncode != 0
    assert "scripts/setup.sh" in build.stdout + build.stderr
    assert "Traceback" not in build.stdout + build.stderr
    assert packer_runs(work) == []


def test_symlink_loop_in_a_folder_input_is_one_line(inputs):
    root, env, _work = inputs
    os.symlink("..", root / "uploads/tree/nested/up")
    out = run_doit(root, "list", env=env, check=False)
    assert out.returncode == 2
    assert "symlink loop" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_symlink_inside_project_counts_by_target_content(inputs):
    root, env, work = inputs
    (root / "shared.conf").write_text("v1\n")
    os.symlink("../../shared.conf", root / "uploads/tree/linked.conf")
    doit(root, env, "final_image")
    packer_runs(work)
    (root / "shared.conf").write_text("v2\n")
    assert doit(root, env, "final_image") == {"stage:os", "stage:child", "final_image"}


def test_keys_do_not_depend_on_where_the_project_lives(tmp_path: Path):
    a, b = tmp_path / "a" / "team", tmp_path / "elsewhere" / "deeper" / "team"
    shutil.copytree(FIXTURES / "projects/team", a)
    shutil.copytree(FIXTURES / "projects/team", b)
    pa, pb = load_project(a), load_project(b)
    for sa, sb in zip(pa.stages, pb.stages, strict=True):
        assert keys.canonical(sa.settings) == keys.canonical(sb.settings)
        assert str(a) not in keys.canonical(sa.settings)
        assert keys.compute(sa, None, a)["key"] == keys.compute(sb, None, b)["key"]


def test_mini_settings_hold_no_absolute_path():
    from conftest import REPO

    project = load_project(REPO)
    for stage in project.stages:
        assert str(REPO) not in keys.canonical(stage.settings), stage.name


def test_built_project_moved_elsewhere_is_a_no_op(project_copy, tmp_path: Path):
    root = project_copy("team")
    env = fake_packer_env(root, tmp_path / "fake")
    doit(root, env, "final_image")
    marker = owned.read_marker(root / "build/stages/top")
    assert marker is not None and marker["stage"] == "top" and len(marker["key"]) == 64
    manifest = json.loads((root / "build/final/team.qcow2.manifest.json").read_text())
    assert [s["input_digest"] for s in manifest["stages"]][-1] == marker["key"]
    moved = tmp_path / "moved" / "team"
    moved.parent.mkdir()
    subprocess.run(["cp", "-a", str(root), str(moved)], check=True)
    shutil.rmtree(root)
    env = fake_packer_env(moved, tmp_path / "fake2")
    assert doit(moved, env, "final_image") == set()
    assert "up to date" in vaultdoit(moved, "status").stdout


@pytest.mark.parametrize(("output_directory", "message"), [
    ("ansible", 'output_directory = "ansible" already exists and was not made by a stage build'),
    (".", 'output_directory = "." is the project folder itself'),
    ("/tmp", 'output_directory = "/tmp" is outside the project'),
    ("../outside", "is outside the project"),
    ("build", 'output_directory = "build" already exists and was not made by a stage build'),
])
def test_output_folders_are_confined(project_copy, output_directory: str, message: str):
    root = project_copy("team")
    template = root / "packer/base.pkr.hcl"
    template.write_text(template.read_text().replace('"${var.out}/base"', f'"{output_directory}"'))
    before = sorted(p.name for p in (root / "ansible").iterdir())
    out = run_doit(root, "list", check=False)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in (root / "ansible").iterdir()) == before


def test_output_folder_symlinked_out_of_the_project_is_refused(project_copy, tmp_path: Path):
    root = project_copy("team")
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine\n")
    (root / "build").mkdir()
    os.symlink(outside, root / "build/stages")
    out = run_doit(root, "list", check=False)
    assert out.returncode == 2 and "outside the project" in out.stderr
    assert (outside / "keep.txt").read_text() == "mine\n"


def test_damaged_database_is_one_line_and_repair_keeps_every_image(project_copy, tmp_path: Path):
    root = project_copy("team")
    env = fake_packer_env(root, tmp_path / "fake")
    doit(root, env, "final_image")
    packer_runs(tmp_path / "fake")
    images = {p: p.stat().st_mtime_ns for p in (root / "build").rglob("*.qcow2")}
    db = root / "build/.vaultdoit/doit.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    out = run_doit(root, "final_image", env=env, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"vaultdoit: error: {db}: the build's dependency database is damaged (file is not a database) "
        "(fix: run `vaultdoit repair`: it rebuilds it from the stage records and keeps every image)"]
    # A changed input after the damage: exactly that stage (and what depends on it) runs.
    with open(root / "ansible/roles/app/files/app.sh", "a") as fh:
        fh.write("echo changed\n")
    repaired = vaultdoit(root, "repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "stage:base: up to date" in repaired.stdout and "stage:mid: up to date" in repaired.stdout
    assert "stage:top: will run: its image was built from other inputs" in repaired.stdout
    assert doit(root, env, "final_image") == {"stage:top", "final_image"}
    assert packer_runs(tmp_path / "fake") == ["top"]
    for path, mtime in images.items():
        if "top" not in path.name and "final" not in str(path):
            assert path.stat().st_mtime_ns == mtime
    # A lost database: the same repair, and nothing runs.
    db.unlink()
    assert vaultdoit(root, "repair").returncode == 0
    assert doit(root, env, "final_image") == set()


def test_a_setting_that_cannot_be_resolved_is_one_warning_and_keys_by_its_text(project_copy):
    root = project_copy("inputs")
    template = root / "packer/inputs.pkr.hcl"
    template.write_text(template.read_text().replace(
        '  provisioner "shell" {\n    script = "scripts/setup.sh"\n  }',
        '  provisioner "shell" {\n    script = "scripts/setup.sh"\n    environment_vars = ["RELEASE=${var.release}"]\n  }')
        + '\nvariable "release" {\n  type = string\n}\n')
    project = load_project(root)
    (warning,) = [w for w in project.warnings if "release" in w]
    assert warning.startswith(f"{template}:")
    assert "environment_vars = \"RELEASE=${var.release}\" cannot be resolved before the build" in warning
    assert 'variable "release" has no value' in warning
    settings = keys.canonical(project.stage("os").settings)
    assert '{"unresolved":"\\"RELEASE=${var.release}\\""}' in settings


def test_secrets_are_never_stored_in_clear(project_copy, tmp_path: Path, monkeypatch):
    """A sensitive variable's value and a PKR_VAR_ secret reach Packer (its private var file)
    but no log, record, manifest or doit database."""
    root = project_copy("team")
    (root / "packer/secrets.pkr.hcl").write_text(
        'variable "token" {\n  type      = string\n  sensitive = true\n  default   = "tok-3f9a1c77e2"\n}\n'
        'variable "password" {\n  type      = string\n  sensitive = true\n  default   = ""\n}\n')
    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text().replace(
        '"flavour=mid"', '"flavour=mid token=${var.token} password=${var.password}"'))
    env = {**fake_packer_env(root, tmp_path / "fake"), "PKR_VAR_password": "pw-8d2e41b0c5"}
    # The fake's own record of each run holds every value Packer received, secrets included (as
    # Packer's memory does): not something the build wrote.
    del env["FAKE_PACKER_RUNS"]
    doit(root, env, "final_image")
    assert packer_runs(tmp_path / "fake") == ["base", "mid", "top"]
    for secret in ("tok-3f9a1c77e2", "pw-8d2e41b0c5"):
        written = [root / "build", root / "cache", tmp_path / "fake"]  # everything the build wrote
        for path in [p for folder in written for p in folder.rglob("*")]:
            if path.is_file() and path.stat().st_size < 64 * 2**20:
                assert secret.encode() not in path.read_bytes(), (secret, path)
    # The key still changes with a secret: its digest stands in the settings.
    monkeypatch.setenv("PKR_VAR_password", "pw-8d2e41b0c5")
    first = keys.canonical(load_project(root).stage("mid").settings)
    monkeypatch.setenv("PKR_VAR_password", "pw-other")
    second = keys.canonical(load_project(root).stage("mid").settings)
    assert "<sensitive:" in first and first != second
    assert "pw-8d2e41b0c5" not in first and "tok-3f9a1c77e2" not in first
