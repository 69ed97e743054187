"""Tag-scoped iteration: ``dev:<stage> --tags X --skip-tags Y [--verify]`` (see vaultdoit.dev).

A task of its own, never the stage's: doit keeps no record that would make the
stage look built, and the stage's image is never written.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vaultdoit.model import Stage
from vaultdoit.plan import Project, planned_with
from vaultdoit.tasks.common import action, probe_spec
from vaultdoit.tasks.final import boot_spec, chain_boot_files
from vaultdoit.tasks.stages import vm_settings

if TYPE_CHECKING:
    from vaultdoit.dev import DevSpec

PARAMS = [
    {"name": "tags", "long": "tags", "type": str, "default": "",
     "help": "Ansible tags to run (comma-separated), as ansible-playbook --tags"},
    {"name": "skip_tags", "long": "skip-tags", "type": str, "default": "",
     "help": "Ansible tags to skip, as ansible-playbook --skip-tags"},
    {"name": "verify", "long": "verify", "type": bool, "default": False,
     "help": "boot-test the development image afterwards with the [verify] checks"},
]


def dev_spec(project: Project, stage: Stage) -> DevSpec:
    """Everything a dev run of ``stage`` needs (made when it runs: a build never pays for it)."""
    from vaultdoit.dev import DevSpec

    cfg = project.config
    paths = cfg.paths
    folder = paths.dev_dir(stage.id)
    kernel, initrd = chain_boot_files(project, stage)
    own = cfg.stage_config(stage.name)
    vm, _ = vm_settings(stage, own.memory, own.cpus, {name for name, _ in project.run_vars})
    image = folder / stage.output.name
    # Logs in with the build key, or with the access key once the final stage's cleanup replaced it.
    boot = replace(
        boot_spec(project, project.images[0], out=image, log_dir=folder / "logs"),
        kernel=kernel, initrd=initrd, key=cfg.build_key, extra_keys=(cfg.verify.key or cfg.access_key,),
        snapshot=False, memory=vm.memory, cpus=vm.cpus, units=(), checks=(),
        probe=probe_spec(project, (kernel,) if kernel else ()))
    image_of = next((i for i in project.images if stage in project.chain(project.stage(i.top))), None)
    verify = None
    if image_of is not None:
        verify = replace(boot_spec(project, image_of, out=image, log_dir=folder / "verify"),
                         kernel=kernel, initrd=initrd)
    return DevSpec(stage=stage, task=f"dev:{stage.id}", config=cfg, variant=planned_with(project, stage),
                   folder=folder, boot=boot, verify=verify, ansible_cfg=cfg.ansible_cfg,
                   facts=paths.facts(f"dev-{stage.id}"), apt=project.apt, run_vars=project.run_vars)


def dev_task(project: Project, stage: Stage) -> dict[str, Any]:
    image = project.config.paths.dev_dir(stage.id) / stage.output.name  # DevSpec.image
    return {
        "basename": f"dev:{stage.id}",
        "doc": f"re-run some Ansible tags of stage {stage.id} on its last build into "
               f"{image.relative_to(project.config.root)} (--tags, --skip-tags, --verify)",
        "actions": [(action("dev_stage"), [functools.partial(dev_spec, project, stage)])],
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
