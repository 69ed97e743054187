"""One doit task per stage: ``stage:<name>``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from vaultdoit.packer import marker_path
from vaultdoit.plan import Project, wheel_manifest
from vaultdoit.model import Stage, StageBuild
from vaultdoit.remote import spec as remote_spec
from vaultdoit.tasks.common import action, digests, log, probe_spec, rel, rels, reports, stall_timeout
from vaultdoit.uptodate import not_interrupted, settings_changed


def stage_build(project: Project, stage: Stage) -> StageBuild:
    """The planned build of ``stage``: everything its action needs."""
    cfg = project.config
    build = StageBuild(stage=stage, ancestors=tuple(project.chain(stage)[:-1]), root=cfg.root,
                       state_dir=cfg.state_dir, logfile=log(project, f"stage:{stage.name}"),
                       digests=digests(project), apt=project.apt, remote=remote_spec(cfg),
                       reports=reports(project))
    if stage.kind == "packer":
        assert stage.packer is not None
        assigned = {name: stage.packer.variables[name] for name in stage.packer.assigned}
        return replace(build, variables=assigned,
                       accelerator=cfg.accelerator, ansible_cfg=cfg.ansible_cfg,
                       stall_timeout=stall_timeout(project, stage.name), probe=probe_spec(project),
                       keep_failed=cfg.failed_dir if cfg.keep_failed else None)
    return replace(build, bootstrap=project.bootstrap_spec(stage), workdir=cfg.build_dir / "tmp")


def stage_task(project: Project, stage: Stage) -> dict[str, Any]:
    """The task that builds ``stage``'s image from its inputs and its parent's image."""
    cfg = project.config
    parent = project.parent(stage)
    file_dep = rels(project, stage.inputs)
    if parent is not None:
        file_dep.append(rel(project, parent.output))
    parent_doc = f" on {parent.name}" if parent else ""
    return {
        # A top-level name (not a subtask) so plain `doit list` shows every stage.
        "basename": f"stage:{stage.name}",
        "doc": f"{stage.doc}{parent_doc}",
        "actions": [(action("build_stage"), [stage_build(project, stage)])],
        "file_dep": sorted(set(file_dep)),
        "targets": rels(project, [stage.output, *stage.extra_outputs]),
        "uptodate": [settings_changed(stage.settings), not_interrupted(marker_path(cfg.state_dir, stage))],
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
        "kind": "stage", "stage": stage.name, "parent": stage.parent, "builder": stage.kind,
        "image": rel(project, stage.output), "log": rel(project, log(project, f"stage:{stage.name}")),
        "wheelhouse": rel(project, manifest) if wheels else None,
        "top": stage.name == project.top.name,
        "failed_disk": rel(project, project.config.failed_dir / stage.name / stage.output.name),
        # The cache tasks whose files the stage uses (for the stage graph).
        "uses": ([f"cache:iso-{stage.iso[2].name}"] if stage.iso else []) + (["cache:wheels"] if wheels else []),
    }


def gen_tasks(project: Project) -> Iterator[dict[str, Any]]:
    for stage in project.stages:
        yield stage_task(project, stage)
