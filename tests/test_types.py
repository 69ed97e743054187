"""The package type-checks (mypy), so the hints stay true."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

MYPY = Path(sys.executable).parent / "mypy"


@pytest.mark.skipif(not MYPY.exists() and shutil.which("mypy") is None, reason="mypy not installed")
def test_mypy_is_clean():
    proc = subprocess.run([str(MYPY if MYPY.exists() else "mypy"), "vaultdoit"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
