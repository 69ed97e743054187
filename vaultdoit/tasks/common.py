"""Paths and small helpers shared by the task builders."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from pathlib import Path

from vaultdoit.keys import relpath
from vaultdoit.model import ProbeSpec, Stage
from vaultdoit.plan import Project
from vaultdoit.watchdog import qemuarg_values


def action(name: str) -> Callable[..., Any]:
    """The build action ``name`` of vaultdoit.actions, imported only when doit runs it:
    listing tasks or a no-op run never loads the build machinery."""

    def run(*args: Any, **kwargs: Any) -> Any:
        from vaultdoit import actions

        return getattr(actions, name)(*args, **kwargs)

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


def probe_spec(project: Project, kernels: tuple[Path, ...] = ()) -> ProbeSpec:
    """What the accelerator probe may boot (``kernels``, then every stage's kernel) and where it keeps its verdict."""
    cfg = project.config
    found = list(kernels)
    for stage in project.stages:
        if stage.source is not None:
            found += [cfg.root / value for value in qemuarg_values(stage.source.attrs, "-kernel")]
        # A bootstrapped base's kernel and initrd: the kernel comes first.
        found += list(stage.extra_outputs[:1])
    return ProbeSpec(kernels=tuple(dict.fromkeys(Path(os.path.normpath(p)) for p in found)),
                     cache_dir=cfg.cache_dir / "probe")


def stall_timeout(project: Project, stage: str | None = None) -> float:
    """``stall_timeout`` for ``stage`` (its ``[stages.<name>]`` value, else the project's); 0 = automatic."""
    cfg = project.config
    value = cfg.stage_config(stage).stall_timeout if stage is not None else cfg.stall_timeout
    return float(value or 0.0)
