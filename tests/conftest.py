"""Shared fixtures: fixture projects copied to a temp folder, helpers to run doit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the venv's doit in ``root`` with the JSON reporter."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([str(VENV_BIN / "doit"), *args], cwd=root, env=full_env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def ran_tasks(stdout: str) -> set[str]:
    """Names of the tasks doit's JSON reporter says were executed (not up to date)."""
    report = json.loads(stdout)
    return {t["name"] for t in report["tasks"] if t["result"] == "success"}
