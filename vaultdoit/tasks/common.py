"""Paths and small helpers shared by the task builders."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from pathlib import Path

from vaultdoit.keys import relpath
from vaultdoit.model import Stage
from vaultdoit.project import Project


class Later:
    """An action's argument made when the action runs: ``vaultdoit.tasks.specs.<builder>(*args)``."""

    def __init__(self, builder: str, *args: Any) -> None:
        self.builder, self.args = builder, args

    def make(self) -> Any:
        from vaultdoit.tasks import specs

        return getattr(specs, self.builder)(*self.args)

    def __repr__(self) -> str:
        return f"<{self.builder}, made when the action runs>"


def action(name: str) -> Callable[..., Any]:
    """The build action ``name`` of vaultdoit.actions, imported only when doit runs it:
    listing tasks or a no-op run never loads the build machinery (nor makes ``Later`` arguments)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        from vaultdoit import actions

        @actions.task_action  # a failure to make an argument is the task's failure, in one line
        def call() -> Any:
            made = [a.make() if isinstance(a, Later) else a for a in args]
            return getattr(actions, name)(*made, **kwargs)

        return call()

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"vaultdoit.actions.{name}"
    return run


def log(project: Project, name: str, variant: str | None = None) -> Path:
    """The log file of one task (``stage:drivers`` -> build/logs/<profile>/stage-drivers.log,
    ``stage:final:demo`` -> build/logs/<profile>/demo/stage-final.log)."""
    return project.config.paths.task_log(name, variant)


def digests(project: Project) -> Path:
    """The checker's digest sidecar (see vaultdoit.checker)."""
    return project.config.paths.digests


def reports(project: Project, variant: str | None = None) -> Path:
    """Where stages leave what they report about the image (package lists)."""
    return project.config.paths.reports(variant)


def variant_note(project: Project, stage: Stage) -> str:
    """What ``doit list`` says about a stage of a profile with variants: shared, or whose."""
    if not project.variants:
        return ""
    if stage.variant:
        return f" [variant {stage.variant}]"
    return f" [shared by {', '.join(project.variants)}]"


def rel(project: Project, path: Path) -> str:
    """``path`` relative to the project root when inside it.

    File dependencies and targets are given to doit in this form (doit runs in the
    project folder), so its dependency records stay valid when the project moves.
    """
    return relpath(path, project.config.root)


def rels(project: Project, paths: Iterable[Path]) -> list[str]:
    return [rel(project, p) for p in paths]
