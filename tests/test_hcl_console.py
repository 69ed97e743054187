"""The evaluator against Packer itself: every local of the fixture, evaluated by
``packer console`` (the installed Packer) and by vaultdoit, must be equal."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES
from vaultdoit.hcl.loader import _Folder

CONSOLE = (FIXTURES / "hcl" / "console").resolve()
PACKER = shutil.which("packer")

pytestmark = pytest.mark.skipif(PACKER is None, reason="packer is not installed")


def local_names(folder: Path) -> list[str]:
    """The names of the fixture's locals, in file order."""
    text = (folder / "expressions.pkr.hcl").read_text()
    start = text.index("locals {")
    body = text[start : text.index("\n}\n", start)]
    return re.findall(r"^  (\w+)\s+=", body, re.M)


def packer_console(folder: Path, expression: str) -> Any:
    """``echo EXPR | packer console DIR``: one expression per run (only the last line is evaluated)."""
    assert PACKER is not None
    proc = subprocess.run([PACKER, "console", str(folder)], input=expression + "\n", capture_output=True,
                          text=True, cwd=folder, timeout=120, env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    if proc.returncode != 0:
        raise AssertionError(f"packer console failed on {expression}:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout)


def typed(value: Any) -> Any:
    """A value with its type spelled out: ``True == 1`` must not pass for equal."""
    if isinstance(value, bool) or value is None:
        return ("bool", value) if value is not None else ("null",)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, dict):
        return ("map", {k: typed(v) for k, v in value.items()})
    return ("string", value)


def test_fixture_has_enough_expressions() -> None:
    assert len(local_names(CONSOLE)) >= 40


def test_every_fixture_expression_matches_packer_console() -> None:
    names = local_names(CONSOLE)
    # One run for all of them: jsonencode() of a list gives Packer's values as JSON.
    theirs = packer_console(CONSOLE, "jsonencode([" + ", ".join(f"local.{n}" for n in names) + "])")
    folder = _Folder(CONSOLE, cwd=CONSOLE)
    ours = [folder.local(name) for name in names]
    mismatches = {name: (mine, packer) for name, mine, packer in zip(names, ours, theirs) if typed(mine) != typed(packer)}
    assert mismatches == {}
    assert len(theirs) == len(names)


def test_a_variable_set_on_both_sides_gives_the_same_values(tmp_path: Path) -> None:
    """The same -var value seen by Packer and by the loader (strings of a map variable are HCL)."""
    folder = tmp_path / "console"
    shutil.copytree(CONSOLE, folder)
    assert PACKER is not None
    expression = "jsonencode([local.nested, local.for_map, local.choose])"
    proc = subprocess.run([PACKER, "console", "-var", "sizes={ small = 1, big = 5 }", "-var", "nothing=set",
                           str(folder)], input=expression + "\n", capture_output=True, text=True, cwd=folder,
                          timeout=120, env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr
    ours = _Folder(folder, cwd=folder, overrides={"sizes": "{ small = 1, big = 5 }", "nothing": "set"})
    mine = [ours.local("nested"), ours.local("for_map"), ours.local("choose")]
    assert typed(mine) == typed(json.loads(proc.stdout))
    assert json.loads(proc.stdout) == ["small", {"big": 10, "small": 2}, "set"]
