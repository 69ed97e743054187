"""The kept plan: used only while everything planning read is unchanged; never stale."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES
from vaultdoit import plancache
from vaultdoit.plan import load_project

# Loads the project the way `doit` does and says whether planning ran (python-hcl2 imported).
PROBE = """
import sys
from pathlib import Path
from vaultdoit import dodo
proj = dodo.project(Path(sys.argv[1]), None)
print("planned" if "hcl2" in sys.modules else "kept")
print(sorted(str(p) for s in proj.stages for p in s.inputs))
print([s.settings for s in proj.stages])
"""


def age(root: Path, seconds: float = 10.0) -> None:
    """Date every file and folder of the project back, as if it was written a while ago."""
    past = time.time() - seconds
    for dirpath, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            os.utime(os.path.join(dirpath, name), (past, past), follow_symlinks=False)
    os.utime(root, (past, past))


def load(root: Path, env: dict[str, str] | None = None) -> tuple[str, str, str]:
    full = dict(os.environ)
    full.update(env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, env=full,
                         check=True)
    verdict, inputs, settings = out.stdout.splitlines()
    return verdict, inputs, settings


@pytest.fixture
def team(project_copy) -> Path:
    root = project_copy("team")
    age(root)
    return root


def test_second_load_keeps_the_plan_without_reading_templates(team: Path):
    assert load(team)[0] == "planned"
    first = load(team)
    assert first[0] == "kept"
    assert load(team)[1:] == first[1:]


def test_an_edit_is_seen_even_twice_within_a_second(team: Path):
    load(team)
    task = team / "ansible/roles/app/files/app.sh"
    task.write_text("echo one\n")
    verdict, _, _ = load(team)
    assert verdict == "planned"
    # Same size, same second: the plan made after the first edit was not kept (racy).
    task.write_text("echo two\n")
    assert load(team)[0] == "planned"
    template = team / "packer/layers.pkr.hcl"
    template.write_text(template.read_text().replace('"flavour=mid"', '"flavour=MID"'))
    assert "flavour=MID" in load(team)[2]
    template.write_text(template.read_text().replace('"flavour=MID"', '"flavour=mix"'))
    assert "flavour=mix" in load(team)[2]


def test_new_file_in_a_folder_and_new_role_are_seen(team: Path):
    load(team)
    assert load(team)[0] == "kept"
    (team / "ansible/roles/app/files/new.txt").write_text("new\n")
    verdict, inputs, _ = load(team)
    assert verdict == "planned" and "new.txt" in inputs


def test_environment_that_planning_read_invalidates(team: Path, tmp_path: Path):
    load(team)
    assert load(team)[0] == "kept"
    # vault.toml's allowed folders can also come from the environment: planning reads it.
    allowed = {"VAULTDOIT_ALLOWED_PATHS": str(tmp_path)}
    assert load(team, allowed)[0] == "planned"
    # A variable nobody reads does not matter.
    assert load(team, {**allowed, "SOMETHING_ELSE": "1"})[0] == "kept"


def test_profile_variable_is_part_of_the_key(team: Path):
    load(team)
    out = subprocess.run([sys.executable, "-c", PROBE, str(team)], capture_output=True, text=True,
                         env={**os.environ, "VAULTDOIT_PROFILE": "nope"})
    assert out.returncode != 0  # the kept plan (no profile) must not answer for another profile


def test_recording_sees_stat_listing_open_and_environment(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    os.environ.setdefault("VAULTDOIT_TEST_SEEN", "1")
    with plancache._recording() as recorder:
        (tmp_path / "a.txt").read_text()
        (tmp_path / "missing").exists()
        list(tmp_path.iterdir())
        os.environ.get("VAULTDOIT_TEST_SEEN")
    seen = set(recorder.paths)
    assert (str(tmp_path / "a.txt"), "stat") in seen
    assert (str(tmp_path / "missing"), "stat") in seen
    assert (str(tmp_path), "list") in seen
    assert recorder.env["VAULTDOIT_TEST_SEEN"] == os.environ["VAULTDOIT_TEST_SEEN"]
    assert not isinstance(os.environ, plancache._RecordingEnviron)


def test_plan_is_the_same_with_and_without_recording():
    root = FIXTURES / "projects/team"
    plain = load_project(root)
    with plancache._recording():
        recorded = load_project(root)
    assert [s.settings for s in plain.stages] == [s.settings for s in recorded.stages]
