"""Paths and small helpers shared by the task builders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from vaultdoit.keys import relpath
from vaultdoit.model import Stage
from vaultdoit.plan import Project


def log(project: Project, name: str) -> Path:
    """The log file of one task (``stage:drivers`` -> build/logs/<profile>/stage-drivers.log)."""
    cfg = project.config
    folder = cfg.logs_dir / cfg.profile if cfg.profile else cfg.logs_dir
    return folder / (name.replace(":", "-") + ".log")


def digests(project: Project) -> Path:
    """The checker's digest sidecar (see vaultdoit.checker)."""
    return project.config.state_dir / "digests.json"


def reports(project: Project) -> Path:
    """Where stages leave what they report about the image (package lists)."""
    return project.config.build_dir / "reports"


def rel(project: Project, path: Path) -> str:
    """``path`` relative to the project root when inside it.

    File dependencies and targets are given to doit in this form (doit runs in the
    project folder), so its dependency records stay valid when the project moves.
    """
    return relpath(path, project.config.root)


def rels(project: Project, paths: Iterable[Path]) -> list[str]:
    return [rel(project, p) for p in paths]
