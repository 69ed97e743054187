"""One doit task per stage: ``stage:<name>``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vaultdoit import actions
from vaultdoit.packer import marker_path
from vaultdoit.plan import Project
from vaultdoit.model import Stage
from vaultdoit.tasks.caches import managed_proxy, proxy_for_builds
from vaultdoit.tasks.common import digests, log, record, rel, rels
from vaultdoit.uptodate import not_interrupted, settings_changed


def stage_task(project: Project, stage: Stage) -> dict[str, Any]:
    """The task that builds ``stage``'s image from its inputs and its parent's image."""
    cfg = project.config
    parent = project.parent(stage)
    file_dep = rels(project, stage.inputs)
    if parent is not None:
        file_dep.append(rel(project, parent.output))
    action: tuple[Any, ...]
    host_apt, guest_apt = proxy_for_builds(project)
    if stage.kind == "packer":
        assert project.packer is not None
        action = (actions.packer_stage, [stage, parent.output if parent else None], {
            "root": cfg.root,
            "packer_cfg": project.packer,
            "explicit_var_files": cfg.var_files,
            "variables": cfg.variables,
            "accelerator": cfg.accelerator,
            "ansible_cfg": cfg.ansible_cfg,
            "state_dir": cfg.state_dir,
            "tools_dir": cfg.state_dir / "tools",
            "logfile": log(project, f"stage:{stage.name}"),
            "digests": digests(project),
            "record": record(project, stage),
            "apt": guest_apt,
        })
    else:
        action = (actions.bootstrap_stage, [project.bootstrap_spec(stage), cfg.build_dir / "tmp",
                                            log(project, f"stage:{stage.name}"), digests(project),
                                            record(project, stage)], {"apt": host_apt})
    parent_doc = f" on {parent.name}" if parent else ""
    return {
        # A top-level name (not a subtask) so plain `doit list` shows every stage.
        "basename": f"stage:{stage.name}",
        "doc": f"{stage.doc}{parent_doc}",
        "actions": [action],
        "file_dep": sorted(set(file_dep)),
        "targets": rels(project, [stage.output, *stage.extra_outputs]),
        "uptodate": [settings_changed(stage.settings), not_interrupted(marker_path(cfg.state_dir, stage))],
        # Ordering only: the proxy must serve before a stage installs packages.
        "task_dep": ["cache:apt"] if managed_proxy(project) else [],
        "clean": True,
    }


def gen_tasks(project: Project) -> Iterator[dict[str, Any]]:
    for stage in project.stages:
        yield stage_task(project, stage)
