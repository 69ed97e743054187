"""What each action gets, made from the plan when the action runs.

A stage's build spec reads the host (memory, CPUs) and the remote cache's
settings, and needs the classes of the build machinery; task generation names
these builders through ``common.Later`` so that a run that builds nothing (or
``doit list``) never makes them.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaultdoit import resources
from vaultdoit.bootspec import BootSpec
from vaultdoit.bootstrap import BootstrapSpec
from vaultdoit.buildspec import ProbeSpec, StageBuild
from vaultdoit.model import Image, Stage
from vaultdoit.outputs import initrd_path, kernel_path
from vaultdoit.project import Project, planned_with, pubkey
from vaultdoit.remote import spec as remote_spec
from vaultdoit.tasks.common import log, reports
from vaultdoit.tasks.final import boot_files, chain_boot_files, final_path, verify_logs
from vaultdoit.watchdog import qemuarg_values

if TYPE_CHECKING:
    from vaultdoit.dev import DevSpec


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


def stall_timeout(project: Project, stage: str | None = None) -> float:
    """``stall_timeout`` for ``stage`` (its ``[stages.<name>]`` value, else the project's); 0 = automatic."""
    cfg = project.config
    value = cfg.stage_config(stage).stall_timeout if stage is not None else cfg.stall_timeout
    return float(value or 0.0)


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


def bootstrap_spec(project: Project, stage: Stage) -> BootstrapSpec:
    """What the bootstrap action of a non-Packer stage needs."""
    cfg = next(b for b in project.config.bootstraps if b.name == stage.name)
    return BootstrapSpec(
        name=cfg.name, suite=cfg.suite, packages=tuple(stage.settings["packages"]),  # as planned (and keyed), not read again
        configure=cfg.configure, disk_size=cfg.disk_size, output=cfg.output,
        kernel=cfg.kernel, initrd=cfg.initrd, user=project.config.build_user,
        build_pubkey=pubkey(project.config.build_key), mirror=cfg.mirror,
    )


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
    return replace(build, bootstrap=bootstrap_spec(project, stage), workdir=paths.bootstrap_workdir)


def boot_spec(project: Project, image: Image, out: Path | None = None, log_dir: Path | None = None) -> BootSpec:
    """The boot test of ``image``'s final file (or of ``out``, booted with the image's kernel)."""
    cfg = project.config
    kernel, initrd = boot_files(project, image)
    final = final_path(project, image)
    out = out or final
    return BootSpec(
        image=out,
        kernel=kernel_path(final) if kernel else None,
        initrd=initrd_path(final) if initrd else None,
        accelerator=cfg.accelerator,
        memory=cfg.verify.memory,
        cpus=resources.size(None, cfg.cpus).cpus,
        user=cfg.verify.user,
        key=cfg.login_key,
        units=cfg.verify.units,
        checks=cfg.verify.checks,
        boot_timeout=cfg.verify.boot_timeout,
        log_dir=log_dir or verify_logs(project, image),
        probe=probe_spec(project, (kernel_path(final),) if kernel else ()),
        stall_timeout=stall_timeout(project),
    )


def dev_spec(project: Project, stage: Stage) -> DevSpec:
    """Everything a dev run of ``stage`` needs."""
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
        kernel=kernel, initrd=initrd, key=cfg.build_key, extra_keys=(cfg.login_key,),
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
