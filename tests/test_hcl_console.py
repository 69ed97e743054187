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
from vaultdoit.hcl import syntax
from vaultdoit.hcl.evaluate import Effects, EvalError, Unresolved
from vaultdoit.hcl.loader import _Folder
from vaultdoit.hcl.syntax import Body

CONSOLE = (FIXTURES / "hcl" / "console").resolve()
PACKER = shutil.which("packer")

pytestmark = pytest.mark.skipif(PACKER is None, reason="packer is not installed")


def local_names(folder: Path) -> list[str]:
    """The names of the fixture's locals, in file order."""
    text = (folder / "expressions.pkr.hcl").read_text()
    start = text.index("locals {")
    body = text[start : text.index("\n}\n", start)]
    return re.findall(r"^  (\w+)\s+=", body, re.M)


def packer_console(folder: Path, expression: str, env: dict[str, str] | None = None) -> Any:
    """``echo EXPR | packer console DIR``: one expression per run (only the last line is evaluated)."""
    assert PACKER is not None
    proc = subprocess.run([PACKER, "console", str(folder)], input=expression + "\n", capture_output=True,
                          text=True, cwd=folder, timeout=120,
                          env={**(os.environ if env is None else env), "CHECKPOINT_DISABLE": "1"})
    if proc.returncode != 0:
        raise AssertionError(f"packer console failed on {expression}:\n{proc.stdout}{proc.stderr}")
    # jsonencode() prints one line; warnings (an undeclared variable in a var file) come first.
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def expressions(body: Body) -> list[str]:
    """The text of every attribute of every block, nested blocks included."""
    found = [attr.expr.loc.text for attr in body.attributes.values()]
    for block in body.blocks:
        found += expressions(block.body)
    return found


def console_values(folder: Path, texts: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Packer's values of those expressions it can evaluate (halving a batch that fails)."""
    try:
        values = packer_console(folder, "jsonencode([" + ", ".join(texts) + "])", env=env)
        return dict(zip(texts, values))
    except AssertionError:
        if len(texts) == 1:
            return {}  # a function or form Packer 1.6.6 lacks
        half = len(texts) // 2
        return {**console_values(folder, texts[:half], env), **console_values(folder, texts[half:], env)}


def test_every_fixture_expression_packer_can_evaluate_matches(tmp_path: Path) -> None:
    """Across all template fixtures: each expression 1.6.6 evaluates gives our value."""
    env = {"VAULTDOIT_TEST_HOME": "/home/x", "PATH": os.environ.get("PATH", "")}
    compared = 0
    for fixture in sorted((FIXTURES / "hcl").resolve().iterdir()):
        if fixture.name.startswith("errors_") or not list(fixture.glob("*.pkr.hcl")):
            continue
        folder = tmp_path / fixture.name
        shutil.copytree(fixture, folder)
        for path in folder.glob("*.pkr.hcl"):  # Packer 1.6.6 does not know required_plugins
            path.write_text(re.sub(r"^packer \{.*?^\}\n", "", path.read_text(), flags=re.S | re.M))
        if not console_values(folder, ["1"], env):
            continue  # Packer refuses the folder as a whole (an unset variable)
        ours: dict[str, Any] = {}
        loaded = _Folder(folder, cwd=folder, env=env)
        texts = [f"var.{n}" for n in loaded.variables.declared] + [f"local.{n}" for n in loaded.locals.nodes]
        texts += [t for _path, body in loaded.bodies for t in expressions(body)]
        for text in dict.fromkeys(texts):
            if "\n" in text:  # the console reads one line: join the lines of brackets, skip the rest
                if "<<" in text or "#" in text or "//" in text:
                    continue
                text = " ".join(text.split("\n"))
            effects = Effects()
            try:
                value = syntax.parse_expression(text, "<fixture>").ev(loaded.scope.with_effects(effects))
            except (Unresolved, EvalError):
                continue  # source.name, data sources...: not something console can evaluate either
            if not effects.volatile:  # timestamp() and the like are fixed on our side by design
                ours[text] = value
        theirs = console_values(folder, list(ours), env)
        # Packer masks anything equal to a sensitive value.
        theirs = {t: v for t, v in theirs.items() if "<sensitive>" not in json.dumps(v)}
        assert {t: typed(ours[t]) for t in theirs} == {t: typed(v) for t, v in theirs.items()}, fixture.name
        compared += len(theirs)
    assert compared >= 150


def test_a_variable_set_on_both_sides_gives_the_same_values(tmp_path: Path) -> None:
    """The same -var value seen by Packer and by the loader (strings of a map variable are HCL)."""
    folder = tmp_path / "console"
    shutil.copytree(CONSOLE, folder)
    assert PACKER is not None
    values = {"sizes": "{ small = 1, big = 5 }", "nothing": "set", "untyped_number": "7", "untyped_flag": "true"}
    names = ["nested", "for_map", "choose", "untyped"]
    expression = "jsonencode([" + ", ".join(f"local.{n}" for n in names) + "])"
    argv = [PACKER, "console", *(a for k, v in values.items() for a in ("-var", f"{k}={v}")), str(folder)]
    proc = subprocess.run(argv, input=expression + "\n", capture_output=True, text=True, cwd=folder,
                          timeout=120, env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr
    ours = _Folder(folder, cwd=folder, overrides=values, env={})
    assert typed([ours.local(n) for n in names]) == typed(json.loads(proc.stdout))
    assert json.loads(proc.stdout) == ["small", {"big": 10, "small": 2}, "set", [8, "on"]]
