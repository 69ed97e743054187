"""Shared fixtures: fixture projects copied to a temp folder, helpers to run doit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"
REPO = TESTS.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def project_copy(tmp_path: Path):
    """Copy ``tests/fixtures/projects/<name>`` into a temp folder and return its path."""

    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / "projects" / name, dest)
        return dest

    return copy


def run_doit(root: Path, *args: str, env: dict[str, str] | None = None,
             check: bool = True, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run the venv's doit in ``root`` (after ``prefix``, e.g. a command that drops privileges)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([*prefix, str(VENV_BIN / "doit"), *args], cwd=root, env=full_env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def ran_tasks(stdout: str) -> set[str]:
    """Names of the tasks doit's JSON reporter says were executed (not up to date)."""
    report = json.loads(stdout)
    return {t["name"] for t in report["tasks"] if t["result"] == "success"}


def executed(stdout: str) -> set[str]:
    """Tasks doit's default reporter says it ran (``.  name`` lines). With ``-n``, use this rather
    than ``--reporter=json``: doit's threads swap sys.stdout under the JSON reporter, which then
    fails at the end (exit 3, nothing printed)."""
    return {line[3:].strip() for line in stdout.splitlines() if line.startswith(".  ")}


def fake_packer_env(root: Path, work: Path, profile: str | None = None) -> dict[str, str]:
    """Environment that runs tests/fakes/packer for the stages of the project at ``root``:
    each stage's image is made by the real qemu-img as an overlay on what it must be backed by."""
    from vaultdoit.plan import load_project

    project = load_project(root, profile)
    plan = {}
    for stage in project.stages:
        parent = project.parent(stage)
        backing = parent.output if parent is not None else stage.root_image
        plan[stage.id] = {"output": str(stage.output), "parent": str(backing) if backing else None}
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.json").write_text(json.dumps(plan))
    return {
        "PATH": f"{TESTS / 'fakes'}{os.pathsep}{os.environ['PATH']}",
        "FAKE_PACKER_PLAN": str(work / "plan.json"),
        "FAKE_PACKER_LOG": str(work / "packer.log"),
        "FAKE_PACKER_RUNS": str(work / "runs.jsonl"),
    }


def fake_runs(work: Path) -> list[dict]:
    """The builds the fake packer recorded (FAKE_PACKER_RUNS), in the order they finished."""
    path = work / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def packer_runs(work: Path) -> list[str]:
    """Stages the fake packer built since the last call (and forget them)."""
    log = work / "packer.log"
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


@pytest.fixture
def team(project_copy, tmp_path: Path):
    """The ``team`` fixture project with the fake packer first on PATH: (root, env, packer log)."""
    root = project_copy("team")
    return root, fake_packer_env(root, tmp_path), tmp_path / "packer.log"
