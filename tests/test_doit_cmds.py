"""doit itself, the vaultdoit way: `doit explain` and `doit status` through doit's plugin entry
points with doit's own options, `doit dumpdb` on the sqlite3 backend, readable `doit info`, and
`doit list` in build order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import fake_packer_env, run_doit

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

ORDER = ["keys", "stage:base", "stage:mid", "stage:top", "final_image", "verify", "dev:base", "dev:mid", "dev:top"]


@pytest.fixture
def built(project_copy, tmp_path: Path, doit_plugins):
    root = project_copy("team")
    env = {**fake_packer_env(root, tmp_path / "fake"), **doit_plugins}
    run_doit(root, "final_image", env=env)
    return root, env


def test_doit_explain_and_status_come_from_the_plugin_entry_points(built):
    root, env = built
    helped = run_doit(root, "help", env=env).stdout
    assert "explain" in helped and "status" in helped

    status = run_doit(root, "status", "final_image", env=env)
    assert status.returncode == 0
    assert [line.split()[0] for line in status.stdout.splitlines()] == ["stage:base", "stage:mid", "stage:top",
                                                                        "final_image"]
    assert all(line.endswith("up to date") for line in status.stdout.splitlines())
    # dev:<stage> tasks run only when asked, every time: listed, never in the build's status
    # (else status would always say that something would run).
    assert "dev:top" in run_doit(root, "list", env=env).stdout
    whole = run_doit(root, "status", env=env, check=False).stdout.splitlines()
    assert "stage:top" in whole[3] and not any(line.startswith("dev:") for line in whole), whole

    with open(root / "ansible/top.yml", "a") as fh:
        fh.write("# changed\n")
    explained = run_doit(root, "explain", "stage:top", "final_image", env=env)
    assert explained.returncode == 0
    assert explained.stdout.splitlines() == [
        "stage:top: will run", "  - input changed: ansible/top.yml",
        "final_image: will run", "  - input build/stages/top/top.qcow2 will be rebuilt by stage:top"]
    status = run_doit(root, "status", env=env, check=False)
    assert status.returncode == 1  # something would run: CI can gate on it
    lines = dict(line.split(None, 1) for line in status.stdout.splitlines())
    assert lines["stage:mid"] == "up to date" and lines["stage:top"].startswith("will run: input changed")
    quiet = run_doit(root, "status", "-q", env=env, check=False)
    assert quiet.returncode == 1 and quiet.stdout == ""
    data = json.loads(run_doit(root, "status", "--json", env=env, check=False).stdout)
    assert {d["task"]: d["will_run"] for d in data}["stage:base"] is False

    wrong = run_doit(root, "explain", "stage:nope", env=env, check=False)
    assert wrong.returncode == 3 and "no task named 'stage:nope'" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_doit_options_choose_the_database(built, tmp_path: Path):
    root, env = built
    # Another database (one that does not exist yet): every task is new to it.
    other = tmp_path / "other.json"
    status = run_doit(root, "status", f"--db-file={other}", "--backend=json", env=env, check=False)
    assert status.returncode == 1
    assert all("never built" in line for line in status.stdout.splitlines()), status.stdout
    # The project's own database, named explicitly, says what the default does.
    own = root / "build/.vaultdoit/doit.sqlite3"
    assert run_doit(root, "status", f"--db-file={own}", "--backend=sqlite3", "final_image", env=env).returncode == 0


def test_dumpdb_reads_the_sqlite3_backend(built):
    root, env = built
    dumped = run_doit(root, "dumpdb", env=env)
    assert "Traceback" not in dumped.stderr
    assert dumped.stdout.splitlines()[0].startswith("sqlite3 database ")
    names = [line.split(" -> ")[0] for line in dumped.stdout.splitlines() if " -> " in line]
    assert names == ["final_image", "stage:base", "stage:mid", "stage:top"]
    one = run_doit(root, "dumpdb", "stage:mid", env=env).stdout
    assert "stage:mid -> " in one and "stage:top" not in one and "'checker:': 'BigFileChecker'" in one


def test_doit_info_says_what_each_check_is(built):
    root, env = built
    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text().replace("flavour=mid", "flavour=other"))
    info = run_doit(root, "info", "stage:mid", env=env, check=False).stdout
    assert " object at 0x" not in info
    assert "settings_changed(image: 2 settings, sha256 " in info
    # Every uptodate check of every task has a readable form.
    from vaultdoit.plan import load_project
    from vaultdoit.tasks import gen_all

    for task in gen_all(load_project(root)):
        for check in task.get("uptodate", []):
            assert " object at 0x" not in repr(check) and "<function" not in repr(check), (task["basename"], check)


def test_doit_list_is_in_build_order(built):
    root, env = built
    listed = run_doit(root, "list", env=env).stdout
    assert [line.split()[0] for line in listed.splitlines()] == ORDER
    # doit's own sort stays available.
    by_name = run_doit(root, "list", "--sort=name", env=env).stdout
    assert [line.split()[0] for line in by_name.splitlines()] == sorted(ORDER)
