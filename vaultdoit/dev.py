"""Tag-scoped iteration: re-run some Ansible tags on a stage's last full build (``dev:<stage>``).

The stage's image is never touched: a copy-on-write overlay on it (under
``build/<profile>/dev/<stage>/``) is booted, ``ansible-playbook`` runs the stage's
playbooks against it with ``--tags``/``--skip-tags`` (as Packer's Ansible
provisioner would: same playbooks, extra arguments, ansible.cfg and user), and the
VM is powered off. The result is a development image that boots like the stage's
own, and can be boot-tested at once (``--verify``). doit's record of the stage is
not changed, so the next ``doit final_image`` still builds the stage in full from
its inputs when they changed.

The trade-off: only the tasks with those tags run, on top of whatever the last full
build left (earlier runs' effects stay, tasks the tagged ones rely on are not run
again, the final stage's cleanup does not run unless tagged), and no stage above it
is rebuilt. Fast to iterate on one role; never an image to ship.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vaultdoit.bootspec import BootSpec
from vaultdoit.errors import VaultError
from vaultdoit.model import AptRoute, Stage
from vaultdoit.paths import safe
from vaultdoit.progress import note

RECORD = "dev.json"


@dataclass(frozen=True)
class DevSpec:
    """What a tag-scoped run of one stage needs (planned by tasks/dev.py)."""

    stage: Stage
    task: str
    config: Any  # vaultdoit.config.ProjectConfig: the templates are read again with this run's folders
    variant: Any  # vaultdoit.config.VariantConfig | None
    folder: Path  # build/<profile>/dev/<stage>
    boot: BootSpec  # boots the development image (writes kept), logs in with the build or the access key
    verify: BootSpec | None  # the image's boot test, run on the development image with --verify
    ansible_cfg: Path | None
    facts: Path
    apt: AptRoute = AptRoute()
    run_vars: tuple[tuple[str, str], ...] = ()  # the run's var.NAME=value

    @property
    def image(self) -> Path:
        return self.folder / self.stage.output.name


def _provisioners(spec: DevSpec) -> list[Any]:
    """The stage's Ansible provisioners, resolved as Packer would run them for this run:
    reports and logs into the development folder, the build's APT proxy."""
    from vaultdoit import plan

    extra: dict[str, str] = {**dict(spec.run_vars), "log_dir": str(spec.folder / "logs"),
                             "report_dir": str(spec.folder / "reports")}
    if spec.apt.guest_url:
        extra["apt_proxy"] = spec.apt.guest_url
    packer_cfg = plan.load_packer(spec.config, spec.variant, extra)
    source = next((s for s in packer_cfg.sources if s.name == spec.stage.name), None)
    if source is None:
        raise VaultError(f"the templates no longer build stage {spec.stage.name}", file=packer_cfg.directory)
    found = [p for p in source.provisioners if p.type == "ansible" and p.playbook_file is not None]
    if not found:
        raise VaultError(f"stage {spec.stage.id} has no ansible provisioner to re-run", file=source.where)
    return found


def _playbook_argv(spec: DevSpec, prov: Any, inventory: Path, tags: str, skip_tags: str) -> list[str]:
    keys = " ".join(f"-i {shlex.quote(str(k))}" for k in (spec.boot.key, *spec.boot.extra_keys))
    argv = ["ansible-playbook", "-i", str(inventory), str(prov.playbook_file), *prov.extra_arguments,
            "--extra-vars", f"packer_build_name={spec.stage.name} packer_builder_type=qemu",
            "--ssh-common-args", f"-o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
                                 f"-o UserKnownHostsFile=/dev/null {keys}"]
    if tags:
        argv += ["--tags", tags]
    if skip_tags:
        argv += ["--skip-tags", skip_tags]
    return argv


def run(spec: DevSpec, tags: str = "", skip_tags: str = "", verify: bool = False) -> None:
    """Make the development image of ``spec.stage`` with only ``tags`` (minus ``skip_tags``) re-run."""
    from vaultdoit import ansible_cfg as ansible_cfg_mod
    from vaultdoit import packer, proc, qemu_img, resources, vm

    stage = spec.stage
    if not (tags or skip_tags):
        raise VaultError(f"{spec.task}: give --tags and/or --skip-tags",
                         hint=f"a full build of the stage is `doit stage:{stage.id}`")
    if not stage.output.is_file():
        raise VaultError(f"stage {stage.id} has no full build to start from", file=stage.output,
                         hint=f"build it once: doit stage:{stage.id}")
    provisioners = _provisioners(spec)
    shutil.rmtree(spec.folder, ignore_errors=True)
    (spec.folder / "logs").mkdir(parents=True)
    (spec.folder / "reports").mkdir()
    logfile = spec.folder / "logs" / "ansible.log"
    qemu_img.create_overlay(spec.image, stage.output, logfile=logfile)
    merged = ansible_cfg_mod.write(spec.ansible_cfg, spec.facts, spec.folder / "ansible.cfg")
    tmp = Path(tempfile.mkdtemp(prefix=f"vaultdoit-dev-{safe(stage.id)}-"))  # short: see actions._packer
    user = next((str(p.settings["user"]) for p in provisioners if isinstance(p.settings.get("user"), str)),
                spec.boot.user)
    start = time.monotonic()

    def work(session: Any) -> list[Any]:
        inventory = spec.folder / "inventory"
        inventory.write_text(f"default ansible_host=127.0.0.1 ansible_port={session.port} ansible_user={user}\n")
        results = []
        for prov in provisioners:
            env = packer.environment(root=spec.config.root, tools_dir=None, ansible_cfg=merged,
                                     extra={"TMPDIR": str(tmp), "ANSIBLE_LOCAL_TEMP": str(tmp)})
            for item in prov.settings.get("ansible_env_vars") or []:
                if isinstance(item, str) and "=" in item:
                    key, _, value = item.partition("=")
                    env[key] = value
            name = f"ansible-playbook {prov.playbook_file.name}"
            try:
                proc.run(_playbook_argv(spec, prov, inventory, tags, skip_tags), logfile=logfile, env=env,
                         cwd=spec.config.root, echo=True)
            except VaultError as err:
                results.append(vm.CheckResult(name, False, str(err)))
                break
            results.append(vm.CheckResult(name, True))
        return results

    try:
        with resources.guard().room(spec.task, resources.VMSize(spec.boot.memory, spec.boot.cpus), say=note):
            note(f"{spec.task}: tags {tags or '(all)'}{f', skipping {skip_tags}' if skip_tags else ''} on the "
                  f"last build of stage {stage.id}; log: {logfile}")
            report = vm.boot_test(spec.boot, work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [c for c in report.checks if not c.ok]
    record = {"stage": stage.id, "base": str(stage.output), "image": str(spec.image), "tags": tags,
              "skip_tags": skip_tags, "ok": not failed, "seconds": round(time.monotonic() - start, 1),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "base_key": _key_of(stage)}
    (spec.folder / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    if failed:
        raise VaultError(f"{spec.task}: {failed[0].name} failed: {failed[0].detail.splitlines()[0]}",
                         file=logfile, hint="read the log; the stage's own image is unchanged")
    note(f"development image {os.path.relpath(spec.image, spec.config.root)} "
          f"({time.monotonic() - start:.0f} s); the next `doit final_image` still builds the stage in full")
    if verify and spec.verify is not None:
        check = replace(spec.verify, image=spec.image)
        with resources.guard().room(spec.task, resources.VMSize(check.memory, check.cpus), say=note):
            result = vm.boot_test(check)
        sys_report = spec.folder / "verify.json"
        sys_report.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
        note(result.render())
        if not result.ok:
            bad = [c.name for c in result.checks if not c.ok]
            raise VaultError(f"{spec.task}: boot test of the development image failed: {', '.join(bad)}",
                             file=sys_report)


def _key_of(stage: Stage) -> str | None:
    from vaultdoit import owned

    marker = owned.read_marker(stage.output.parent)
    return str(marker["key"]) if marker and isinstance(marker.get("key"), str) else None
