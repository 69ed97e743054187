"""One doit task per stage: ``stage:<name>``, or ``stage:<name>:<variant>`` for a stage built per variant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vaultdoit.project import Project, wheel_manifest
from vaultdoit.model import Stage
from vaultdoit.tasks.common import Later, action, log, rel, rels, variant_note
from vaultdoit.uptodate import not_interrupted, settings_changed


def stage_task(project: Project, stage: Stage) -> dict[str, Any]:
    """The task that builds ``stage``'s image from its inputs and its parent's image."""
    cfg = project.config
    parent = project.parent(stage)
    file_dep = rels(project, stage.inputs)
    if parent is not None:
        file_dep.append(rel(project, parent.output))
    parent_doc = f" on {parent.id}" if parent else ""
    return {
        # A top-level name (not a subtask) so plain `doit list` shows every stage.
        "basename": f"stage:{stage.id}",
        "doc": f"{stage.doc}{parent_doc}{variant_note(project, stage)}",
        "actions": [(action("build_stage"), [Later("stage_build", project, stage)])],
        "file_dep": sorted(set(file_dep)),
        "targets": rels(project, [stage.output, *stage.extra_outputs]),
        "uptodate": [settings_changed(stage.settings), not_interrupted(cfg.paths.building_marker(stage.id))],
        # Ordering only: the proxy must serve before a stage installs packages.
        "task_dep": ["cache:apt"] if project.apt.managed_root is not None else [],
        "clean": True,
        "meta": {"vaultdoit": stage_meta(project, stage)},
    }


def stage_meta(project: Project, stage: Stage) -> dict[str, Any]:
    """What the run's progress, summary and report show about the stage (plain, project-relative)."""
    manifest = wheel_manifest(project.config)
    wheels = manifest in stage.inputs and project.config.requirements is not None
    return {
        "kind": "stage", "stage": stage.id, "variant": stage.variant, "parent": stage.parent, "builder": stage.kind,
        "image": rel(project, stage.output), "log": rel(project, log(project, f"stage:{stage.id}", stage.variant)),
        "wheelhouse": rel(project, manifest) if wheels else None,
        "top": any(image.top == stage.id for image in project.images),
        "failed_disk": rel(project, project.config.paths.failed_disk(stage.id, stage.output.name)),
        # The cache tasks whose files the stage uses (for the stage graph).
        "uses": ([f"cache:iso-{stage.iso[2].name}"] if stage.iso else []) + (["cache:wheels"] if wheels else []),
    }


def gen_tasks(project: Project) -> Iterator[dict[str, Any]]:
    for stage in project.stages:
        yield stage_task(project, stage)
