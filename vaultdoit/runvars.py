"""What a doit command line gives one run: Packer variables and ``keep_failed``.

``doit final_image var.disk_size=8G var.ssh_timeout=30m keep_failed=1``.

doit keeps one value per ``name=value`` argument name, so each variable is
its own name (``var.<packer variable>``) and several can be given at once.
They override vault.toml's ``[variables]`` and the var files, go to Packer
as ``-var`` and decide stage keys like any variable: a run with another
``disk_size`` rebuilds the stages it changes (``ssh_timeout`` and other
settings of the build VM rebuild nothing).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from vaultdoit.errors import ConfigError

if TYPE_CHECKING:
    from vaultdoit.project import Project

PREFIX = "var."
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

RunVars = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: hashable, for the project cache


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class RunOptions:
    """Per-run settings given on doit's command line."""

    def __init__(self, variables: RunVars = (), keep_failed: bool | None = None) -> None:
        self.variables = variables
        self.keep_failed = keep_failed  # None: vault.toml decides


def from_doit() -> RunOptions:
    """The ``var.NAME=value`` and ``keep_failed=1`` arguments of the running doit command."""
    from doit import doit_cmd

    given = getattr(doit_cmd, "_CMDLINE_VARS", None) or {}
    keep = given.get("keep_failed")
    return RunOptions(parse(f"{k[len(PREFIX):]}={v}" for k, v in given.items() if k.startswith(PREFIX)),
                      None if keep is None else flag("keep_failed", keep))


def flag(name: str, value: str) -> bool:
    """A yes/no command-line value."""
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ConfigError(f"{name}={value}: not a yes/no value", hint=f"write {name}=1 or {name}=0")


def apply(project: Project, options: RunOptions) -> Project:
    """``project`` with the run's options over vault.toml's (the variables are planned already)."""
    if options.keep_failed is None or options.keep_failed == project.config.keep_failed:
        return project
    return dataclasses.replace(project, config=dataclasses.replace(project.config, keep_failed=options.keep_failed))


def parse(pairs: Iterable[str]) -> RunVars:
    """``NAME=value`` texts as sorted pairs; a bad name is a one-line error."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not NAME.fullmatch(name):
            raise ConfigError(f"{PREFIX}{pair}: not a Packer variable assignment",
                              hint=f"write {PREFIX}NAME=VALUE, e.g. {PREFIX}disk_size=8G")
        found[name] = value
    return tuple(sorted(found.items()))


def suffix(given: RunVars) -> str:
    """What tells apart the kept plans of runs with other variables ("" without any)."""
    if not given:
        return ""
    import hashlib

    return "-" + hashlib.sha256(repr(given).encode()).hexdigest()[:16]


def check_declared(given: RunVars, declared: Mapping[str, object], folder: Path) -> None:
    """Refuse a variable the templates do not declare (Packer would refuse it too, later)."""
    for name, _ in given:
        if name not in declared:
            import difflib

            close = difflib.get_close_matches(name, list(declared), n=1)
            raise ConfigError(f"{PREFIX}{name}: no variable \"{name}\" is declared in the templates",
                              file=folder, hint=f'did you mean "{close[0]}"?' if close else
                              "declare it in a variable block or drop it from the command line")
