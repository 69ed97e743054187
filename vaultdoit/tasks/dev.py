"""Tag-scoped iteration: ``dev:<stage> --tags X --skip-tags Y [--verify]`` (see vaultdoit.dev).

A task of its own, never the stage's: doit keeps no record that would make the
stage look built, and the stage's image is never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vaultdoit.model import Stage
from vaultdoit.project import Project
from vaultdoit.tasks.common import Later, action

PARAMS = [
    {"name": "tags", "long": "tags", "type": str, "default": "",
     "help": "Ansible tags to run (comma-separated), as ansible-playbook --tags"},
    {"name": "skip_tags", "long": "skip-tags", "type": str, "default": "",
     "help": "Ansible tags to skip, as ansible-playbook --skip-tags"},
    {"name": "verify", "long": "verify", "type": bool, "default": False,
     "help": "boot-test the development image afterwards with the [verify] checks"},
]


def dev_task(project: Project, stage: Stage) -> dict[str, Any]:
    image = project.config.paths.dev_dir(stage.id) / stage.output.name  # DevSpec.image
    return {
        "basename": f"dev:{stage.id}",
        "doc": f"re-run some Ansible tags of stage {stage.id} on its last build into "
               f"{image.relative_to(project.config.root)} (--tags, --skip-tags, --verify)",
        "actions": [(action("dev_stage"), [Later("dev_spec", project, stage)])],
        "params": PARAMS,
        "uptodate": [False],  # every call is a new run
        # Ordering only: the tagged tasks may install packages through the build's proxy.
        "task_dep": ["cache:apt"] if project.apt.managed_root is not None else [],
        "verbosity": 2,
    }


def gen_tasks(project: Project) -> Iterator[dict[str, Any]]:
    for stage in project.stages:
        if stage.source is not None and any(p.type == "ansible" for p in stage.source.provisioners):
            yield dev_task(project, stage)
