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


@pytest.fixture
def team(project_copy, tmp_path: Path):
    """The ``team`` fixture project with the fake packer first on PATH: (root, env, packer log)."""
    from vaultdoit.plan import load_project

    root = project_copy("team")
    project = load_project(root)
    plan = {s.name: {"output": str(s.output), "parent": str(project.parent(s).output) if s.parent else None}
            for s in project.stages}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {
        "PATH": f"{TESTS / 'fakes'}{os.pathsep}{os.environ['PATH']}",
        "FAKE_PACKER_PLAN": str(tmp_path / "plan.json"),
        "FAKE_PACKER_LOG": str(tmp_path / "packer.log"),
    }
    return root, env, tmp_path / "packer.log"
