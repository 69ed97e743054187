"""One doit task per stage: ``stage:<name>``, or ``stage:<name>:<variant>`` for a stage built per variant."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import replace
from typing import Any

from vaultdoit import resources
from vaultdoit.plan import Project, wheel_manifest
from vaultdoit.model import Stage, StageBuild
from vaultdoit.remote import spec as remote_spec
from vaultdoit.tasks.common import action, log, probe_spec, rel, rels, reports, stall_timeout, variant_note
from vaultdoit.uptodate import not_interrupted, settings_changed


def vm_settings(stage: Stage, memory: int | None, cpus: int | None,
                given: Collection[str] = ()) -> tuple[resources.VMSize, dict[str, int]]:
    """The build VM's size (what the guard counts) and the template variables that receive it.

    A source attribute written as ``var.X`` gets X; else a variable named like the attribute, where
    the template declares one. A template that declares neither keeps its own value, which the guard
    counts (Packer's default where it sets none). A variable the project assigns (vault.toml
    ``[variables]``, a variant's values, var files, ``PKR_VAR_*``) or in ``given`` (the run's
    ``var.X=``) wins over the ``memory``/``cpus`` settings and the host: Packer gets the planned
    value, and the guard counts it.
    """
    assert stage.source is not None and stage.packer is not None
    given = {*given, *stage.packer.assigned}
    wanted = resources.size(memory, cpus)
    sizes: dict[str, int] = {}
    variables: dict[str, int] = {}
    for attr, value in (("memory", wanted.memory), ("cpus", wanted.cpus)):
        name = stage.source.attr_vars.get(attr) or (attr if attr in stage.packer.variables else None)
        planned = stage.packer.variables.get(name) if name is not None and name in given else None
        if name is not None and planned is not None:
            sizes[attr] = _whole(planned, value)
        elif name is not None:
            variables[name] = value
            sizes[attr] = value
        else:
            own = stage.source.attrs.get(attr)
            default = resources.PACKER_MEMORY if attr == "memory" else resources.PACKER_CPUS
            sizes[attr] = own if isinstance(own, int) and not isinstance(own, bool) else default
    return resources.VMSize(memory=sizes["memory"], cpus=sizes["cpus"]), variables


def _whole(value: Any, default: int) -> int:
    """A planned size as a whole number (a run's variable may come as text), else ``default``."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def stage_build(project: Project, stage: Stage) -> StageBuild:
    """The planned build of ``stage``: everything its action needs."""
    cfg = project.config
    paths = cfg.paths
    task = f"stage:{stage.id}"
    build = StageBuild(stage=stage, ancestors=tuple(project.chain(stage)[:-1]), root=cfg.root,
                       state_dir=paths.state_dir, logfile=log(project, task, stage.variant),
                       digests=paths.digests, apt=project.apt, paths=paths, task=task,
                       remote=remote_spec(cfg), reports=reports(project, stage.variant))
    if stage.kind == "packer":
        assert stage.packer is not None
        assigned = {name: stage.packer.variables[name] for name in stage.packer.assigned}
        own = cfg.stage_config(stage.name)
        vm, vm_vars = vm_settings(stage, own.memory, own.cpus, {name for name, _ in project.run_vars})
        return replace(build, variables=assigned,
                       accelerator=cfg.accelerator, ansible_cfg=cfg.ansible_cfg,
                       stall_timeout=stall_timeout(project, stage.name), probe=probe_spec(project),
                       folders=(paths.logs(stage.variant), paths.reports(stage.variant)),
                       vm=vm, vm_vars=vm_vars,
                       port_vars=tuple(v for v in resources.PORT_VARS if v in stage.packer.variables),
                       keep_failed=cfg.failed_dir if cfg.keep_failed else None)
    return replace(build, bootstrap=project.bootstrap_spec(stage), workdir=paths.bootstrap_workdir)


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
        "actions": [(action("build_stage"), [stage_build(project, stage)])],
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
