"""Paths and small helpers shared by the task builders."""

from __future__ import annotations

from pathlib import Path

from vaultdoit.plan import Project


def log(project: Project, name: str) -> Path:
    """The log file of one task (``stage:drivers`` -> build/logs/<profile>/stage-drivers.log)."""
    cfg = project.config
    folder = cfg.logs_dir / cfg.profile if cfg.profile else cfg.logs_dir
    return folder / (name.replace(":", "-") + ".log")


def digests(project: Project) -> Path:
    """The checker's digest sidecar (see vaultdoit.checker)."""
    return project.config.state_dir / "digests.json"


def rel(project: Project, path: Path) -> str:
    """``path`` relative to the project root, for messages."""
    try:
        return str(path.relative_to(project.config.root))
    except ValueError:
        return str(path)
