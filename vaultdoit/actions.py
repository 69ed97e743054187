"""The work behind each doit task. Task dicts reference these; nothing here runs at load time.

Every action turns a VaultError into doit's TaskFailed, so doit prints our
one-line message (with the command's log tail) instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from doit.exceptions import TaskFailed

from vaultdoit import ansible_cfg as ansible_cfg_mod
from vaultdoit import (accel, apt_proxy, bootstrap, checker, keys, owned, packer, proc, remote, resources,
                       sensitive, stage_files, watchdog)
from vaultdoit.errors import VaultError, os_error
from vaultdoit.buildspec import StageBuild
from vaultdoit.model import Stage
from vaultdoit.paths import safe
from vaultdoit.progress import note

P = ParamSpec("P")
R = TypeVar("R")


def task_action(func: Callable[P, R]) -> Callable[P, R | TaskFailed]:
    """Report VaultError, and any OSError as one line with its path, as a doit task failure."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | TaskFailed:
        try:
            return func(*args, **kwargs)
        except VaultError as err:
            return TaskFailed(str(err))
        except OSError as err:  # permission, read-only, disk full, missing file
            return TaskFailed(str(os_error(err)))

    return wrapper


@task_action
def make_keys(keys: Sequence[Path], logfile: Path, shared: Mapping[Path, Path] | None = None) -> None:
    """Create the SSH key pairs the build uses (build key) and the image ships (access key);
    a key in ``shared`` is copied from the team's key file instead."""
    for key in keys:
        if shared and key in shared:
            from vaultdoit import shared_keys

            shared_keys.install(shared[key], key, logfile=logfile)
            continue
        if key.exists() and key.with_name(key.name + ".pub").exists():
            continue
        key.parent.mkdir(parents=True, exist_ok=True)
        key.parent.chmod(0o700)
        tmp = key.with_name(key.name + ".tmp")
        for leftover in (tmp, tmp.with_name(tmp.name + ".pub")):
            leftover.unlink(missing_ok=True)
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vaultdoit-{key.stem}", "-f", str(tmp)],
                 logfile=logfile)
        os.replace(tmp.with_name(tmp.name + ".pub"), key.with_name(key.name + ".pub"))
        os.replace(tmp, key)


@task_action
def build_stage(build: StageBuild) -> None:
    """Build one stage's image atomically and record what decided it beside the image."""
    stage = build.stage
    if stage.problems:
        more = f" (and {len(stage.problems) - 1} more)" if len(stage.problems) > 1 else ""
        raise VaultError(stage.problems[0] + more, hint="create the missing file or fix the setting")
    # Every input is read here, before any VM starts: an unreadable file fails in a second.
    record = keys.compute(stage, parent_key(build), build.root, build.digests)
    if remote.before_build(build, record):  # the shared cache had it: nothing to build
        return
    start, wall = time.monotonic(), time.time()
    waited = 0.0
    if stage.kind == "packer":
        waited = _packer(build)
    else:
        _bootstrap(build)
    digest = checker.record_digest(stage.output, build.digests)
    proxy = apt_proxy.managed(build.apt)
    record = {
        **record, "format": 1, "stage": stage.id, "variant": stage.variant, "image": stage.output.name,
        "image_sha256": digest, "image_bytes": stage.output.stat().st_size,
        "build_seconds": round(time.monotonic() - start - waited, 1),
        # Time spent waiting for room beside other build VMs (see resources.Guard), not building.
        "waited_seconds": round(waited, 1),
        "vm": dataclasses.asdict(build.vm) if build.vm is not None else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "apt": dataclasses.asdict(apt_proxy.traffic(proxy, since=wall)) if proxy else None,
        "reports": stage_files.reports_snapshot(build.reports),
        # An overlay is valid only on the exact parent image it was built on.
        "parent_image_sha256": stage_files.image_digest(build.parent.output) if build.parent else None,
    }
    owned.write_marker(stage.output.parent, record)
    size = stage.output.stat().st_size
    note(f"stage {stage.id} built in {time.monotonic() - start - waited:.0f} s ({size / 2**20:.0f} MiB image)")
    remote.after_build(build, record)


def parent_key(build: StageBuild) -> str | None:
    """The parent's key: as recorded beside its image, else computed from the plan."""
    keys_by_name = keys.chain_keys(build.ancestors, build.root, build.digests)
    return keys_by_name[build.parent.id] if build.parent is not None else None


def _bootstrap(build: StageBuild) -> None:
    """A base image made with mmdebstrap (see bootstrap.py), through the APT proxy if any."""
    spec = dataclasses.replace(build.bootstrap, apt_proxy=build.apt.host_url)
    assert build.workdir is not None
    note(f"bootstrapping {spec.name} with mmdebstrap ({spec.suite}); log: {build.logfile}")
    bootstrap.build(spec, workdir=build.workdir, logfile=build.logfile)


def _packer(build: StageBuild) -> float:
    """One Packer stage, built atomically, its backing reference made relative; returns the
    seconds it waited for room beside other build VMs."""
    stage, root, paths = build.stage, build.root, build.paths
    assert stage.source is not None and stage.packer is not None and paths is not None
    packer_cfg = stage.packer
    accel_name = accel.choose(build.accelerator, build.probe)
    shim = packer.needs_backing_format_shim(packer.packer_version(), packer.qemu_img_version())
    merged_cfg = ansible_cfg_mod.write(build.ansible_cfg, paths.facts(stage.id), paths.ansible_cfg(stage.id))
    # Each build its own temporary folder: Packer's and Ansible's files never meet another build's.
    # In the system's temporary folder, not the project: Packer's plugins listen on Unix sockets
    # there, whose paths may not exceed 107 bytes.
    tools_dir = packer.write_shim(paths.tools_dir) if shim else None
    runtime: dict[str, Any] = dict(build.vm_vars)  # set by vaultdoit for this run: on the command line, never secret
    if "accelerator" in packer_cfg.variables:
        runtime["accelerator"] = accel_name
    if stage.iso is not None and "iso_url" in stage.source.attr_vars:
        # Point the template at the verified copy in the ISO store, with the checksum it was
        # verified against (never a hash taken of the file as it is now).
        from vaultdoit import iso_store

        cached = stage.iso[2]
        runtime[stage.source.attr_vars["iso_url"]] = str(cached)
        if "iso_checksum" in stage.source.attr_vars:
            runtime[stage.source.attr_vars["iso_checksum"]] = iso_store.verified(cached, stage.iso[1], stage.iso[0])
    if build.apt.guest_url and "apt_proxy" in packer_cfg.variables:
        # Build-time only: reaches the playbooks as an extra var, never the cache key.
        runtime["apt_proxy"] = build.apt.guest_url
    for folder in build.folders:
        folder.mkdir(parents=True, exist_ok=True)
    build.logfile.parent.mkdir(parents=True, exist_ok=True)
    attrs = stage.source.attrs
    tmp = Path(tempfile.mkdtemp(prefix=f"vaultdoit-{safe(stage.id)}-"))
    try:
        env = packer.environment(root=root, tools_dir=tools_dir, ansible_cfg=merged_cfg,
                                 extra={"TMPDIR": str(tmp), "ANSIBLE_LOCAL_TEMP": str(tmp)})
        with resources.guard().room(build.task or f"stage:{stage.id}", build.vm, say=note) as lease:
            # Its own window of ports (where the template declares the variables): VMs side by side
            # never race for the same SSH or HTTP port (VNC: Packer's own pick, see resources).
            window = resources.port_window(lease.slot)
            runtime.update({name: window[name] for name in build.port_vars})
            # Every variable whose value is not the template's default (vault.toml, var files,
            # PKR_VAR_*, the command line), as resolved by the planner, goes to Packer in a private file:
            # Packer then sees exactly the values the key was made of, and secrets stay out of argv and logs.
            assigned = {k: v for k, v in build.variables.items() if k not in runtime}
            var_file = packer.write_var_file(paths.var_file(stage.id), assigned)
            # Packer's default on error removes the VM's disk; abort leaves it for keep_failed to keep.
            argv = packer.build_argv(packer_cfg, stage.source.only, runtime, [var_file] if var_file else [],
                                     on_error="abort" if build.keep_failed is not None else None)
            build.logfile.write_text("")  # one log per build: the last one is what a failure shows
            # No console output, Packer output or disk writes for this long: the VM is stuck.
            dog = watchdog.Watchdog(
                label=build.task or f"stage:{stage.id}",
                timeout=watchdog.timeout_for(build.stall_timeout, watchdog.automatic_timeout(attrs)),
                console=watchdog.console_log(attrs, root), output=build.logfile, disks=(stage.output,),
                accelerator=accel_name, root=root)
            note(f"building stage {stage.id} with packer ({accel_name}, {build.vm.describe()}); "
                 f"log: {build.logfile}")
            try:
                packer.build_stage(stage, build.backing, argv=argv, env=env, cwd=root, state_dir=build.state_dir,
                                   logfile=build.logfile, watch=dog, watch_interval=dog.interval,
                                   secrets=sensitive.values(packer_cfg),
                                   keep_failed=functools.partial(keep_failed_disk, build) if build.keep_failed
                                   else None)
            finally:
                if var_file is not None:
                    var_file.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lease.waited


def keep_failed_disk(build: StageBuild, folder: Path) -> None:
    """Move a failed build's folder to ``build.keep_failed/<stage>`` and say how to boot its disk.

    Only the last failure of each stage is kept. The disk stays an overlay on the
    parent's image (its backing reference is made relative from its new place).
    """
    from vaultdoit import qemu_img
    from vaultdoit.keys import relpath

    stage = build.stage
    assert build.keep_failed is not None
    image = folder / stage.output.name
    if not image.is_file():
        note(f"keep_failed: stage {stage.id} failed before Packer made its disk; nothing to keep")
        return
    dest = build.keep_failed / safe(stage.id)
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder, dest)
    kept = dest / image.name
    usable = ""
    try:
        if build.backing is not None:
            qemu_img.rebase_relative(kept, build.backing, logfile=build.logfile)
        qemu_img.info(kept)
    except VaultError as err:
        usable = f" (it may not boot: {err.message})"
    owned.write_marker(dest, {"format": 1, "stage": stage.id, "image": kept.name, "failed": True,
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "backing": relpath(build.backing, build.root) if build.backing else None,
                              "log": relpath(build.logfile, build.root)})
    note(f"kept the failed build's disk: {relpath(kept, build.root)}{usable}; boot it with "
         f"`vaultdoit run failed:{stage.id}` (a throwaway snapshot: the disk is not changed), "
         f"then `vaultdoit ssh failed:{stage.id}`. The stage's previous image is untouched.")


@task_action
def fetch_iso(url: str, checksum: str, store: Path) -> None:
    """Put ``url`` into the ISO store, verified (see iso_store.py)."""
    from vaultdoit import iso_store

    note(f"fetching {url} into {store}")
    path = iso_store.fetch(url, checksum, store)
    note(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB, verified")


@task_action
def start_apt_proxy(proxy: apt_proxy.AptProxy, logfile: Path) -> None:
    """Start (or find running) the build's own apt-cacher-ng on loopback."""
    url = apt_proxy.start(proxy, logfile=logfile)
    note(f"APT proxy {url} (cache in {proxy.data_dir}; stop it with `vaultdoit cache stop`)")


@task_action
def download_wheels(requirements: Path, dest: Path, manifest_file: Path, logfile: Path) -> None:
    """Fill the wheelhouse from a hash-pinned requirements file and write its manifest."""
    dest.mkdir(parents=True, exist_ok=True)
    note(f"downloading wheels for {requirements.name} into {dest}")
    proc.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
              "--require-hashes", "--only-binary=:all:", "-r", str(requirements), "-d", str(dest)],
             logfile=logfile)
    shutil.copyfile(requirements, dest / "requirements.txt")
    wheels = {wheel.name: checker.hash_file(wheel)[0] for wheel in sorted(dest.glob("*.whl"))}
    tmp = manifest_file.with_suffix(".tmp")
    # The manifest is an input of the stages that install the wheels: no path in it, so their
    # keys are the same wherever the project lives.
    tmp.write_text(json.dumps({"requirements_sha256": checker.hash_file(requirements)[0], "wheels": wheels},
                              indent=2, sort_keys=True) + "\n")
    os.replace(tmp, manifest_file)


@task_action
def flatten_image(top: Path, out: Path, *, kernel: Path | None, initrd: Path | None,
                  cfg: Any, logfile: Path, chain: Sequence[Stage], root: Path, reports: Sequence[Path],
                  variant: str | None = None, signing_key: Path | None = None, digests: Path | None = None) -> None:
    """Flatten and compress the chain into the final image; write its manifest and SBOM, signed
    with ``signing_key`` if given. Its sha256 goes into the checker's ``digests``: the boot test,
    which depends on the image, then need not hash it again."""
    from vaultdoit import final, manifest, provenance, sbom

    made: dict[str, Any] = {}

    def make_manifest(image: Path, digest: str) -> str:
        data = manifest.build(image=image, sha256=digest, compression=cfg.compression, chain=list(chain),
                              root=root, reports=reports, variant=variant, provenance=provenance.record(root))
        data["image"]["name"] = out.name
        made["manifest"] = data
        return manifest.dump(data)

    def make_sbom(image: Path, digest: str, files: dict[str, str]) -> str:
        return sbom.document(made["manifest"], files=files, os_release=manifest.report_file(reports, sbom.OS_RELEASE_FILE))

    logfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.write_text("")
    note(f"flattening {top.name} into {out} ({cfg.compression}); log: {logfile}")
    start = time.monotonic()
    digest = final.flatten(top, out, kernel=kernel, initrd=initrd, cfg=cfg, logfile=logfile,
                           manifest=make_manifest, sbom=make_sbom, signing_key=signing_key)
    if digests is not None:
        checker.record_digest(out, digests, digest=digest)
    note(f"final image {out.name}: {out.stat().st_size / 2**20:.0f} MiB in "
         f"{time.monotonic() - start:.1f} s, sha256 {digest[:16]}…")


@task_action
def verify_image(spec: Any, report_file: Path, junit_file: Path | None = None,
                 label: str = "verify") -> TaskFailed | None:
    """Boot the final image on a throwaway snapshot and run the checks (see vm.py).

    The report goes to ``report_file`` (JSON) and ``junit_file`` (JUnit XML, also when
    the image does not boot far enough to be checked).
    """
    from vaultdoit import files, junit, vm
    from vaultdoit.errors import BootError, Stalled

    suite, started = f"verify {spec.image.name}", time.time()
    # The boot test's VM counts beside the build VMs running at once (see resources.Guard).
    with resources.guard().room(label, resources.VMSize(memory=spec.memory, cpus=spec.cpus), say=note):
        note(f"boot test of {spec.image.name} (serial log in {spec.log_dir})")
        try:
            report = vm.boot_test(spec)
        except (BootError, Stalled) as err:
            if junit_file is not None:
                case = junit.Case("boot to SSH login", suite_class(spec.image), time.time() - started, "error",
                                  str(err))
                files.write_atomic(junit_file, junit.document(suite, [case], started=started))
            raise
    sys.stderr.write(report.render() + "\n")
    files.write_atomic(report_file, json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    if junit_file is not None:
        files.write_atomic(junit_file, junit.document(suite, boot_cases(report), started=started))
    if not report.ok:
        failed = [c.name for c in report.checks if not c.ok]
        return TaskFailed(f"boot test failed: {', '.join(failed)} (report: {report_file})")
    return None


def suite_class(image: Path) -> str:
    """The JUnit classname of an image's checks: ``verify.<image name>``."""
    return "verify." + image.name.removesuffix(".qcow2").replace(".", "_")


def boot_cases(report: Any) -> list[Any]:
    """JUnit cases of a boot report: the boot itself, then one per check."""
    from vaultdoit import junit

    classname = suite_class(report.image or Path("image"))
    cases = [junit.Case("boot to SSH login", classname, report.boot_seconds,
                        output=f"accelerator {report.accelerator}; serial log: {report.serial_log}")]
    for check in report.checks:
        seconds = report.shutdown_seconds if check.name == "clean shutdown" else 0.0
        cases.append(junit.Case(check.name, classname, seconds, "passed" if check.ok else "failure",
                                check.detail if not check.ok else "", check.detail if check.ok else ""))
    return cases


@task_action
def dev_stage(spec: Any, tags: str = "", skip_tags: str = "", verify: bool = False, **_: Any) -> None:
    """A tag-scoped run of one stage into its development image (see dev.py); ``spec`` is its DevSpec."""
    from vaultdoit import dev

    dev.run(spec, tags=tags, skip_tags=skip_tags, verify=verify)
