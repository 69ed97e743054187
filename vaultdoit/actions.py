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
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from doit.exceptions import TaskFailed

from vaultdoit import ansible_cfg as ansible_cfg_mod
from vaultdoit import accel, apt_proxy, bootstrap, checker, manifest, packer, proc
from vaultdoit.errors import VaultError, os_error
from vaultdoit.model import PackerConfig, Stage

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


def note(message: str) -> None:
    """Progress line on stderr (doit shows stderr of running tasks)."""
    sys.stderr.write(f"vaultdoit: {message}\n")
    sys.stderr.flush()


@task_action
def make_keys(keys: Sequence[Path], logfile: Path) -> None:
    """Create the SSH key pairs the build uses (build key) and the image ships (access key)."""
    for key in keys:
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
def bootstrap_stage(spec: bootstrap.BootstrapSpec, workdir: Path, logfile: Path, digests: Path,
                    record: Path, apt: tuple[str | None, apt_proxy.AptProxy | None] = (None, None)) -> None:
    """Build a base image with mmdebstrap (see bootstrap.py), through the APT proxy if any."""
    url, proxy = apt
    note(f"bootstrapping {spec.name} with mmdebstrap ({spec.suite}); log: {logfile}")
    start, wall = time.monotonic(), time.time()
    bootstrap.build(dataclasses.replace(spec, apt_proxy=url), workdir=workdir, logfile=logfile)
    checker.record_digest(spec.output, digests)
    manifest.record_build(record, seconds=time.monotonic() - start, image=spec.output,
                          apt=apt_proxy.traffic(proxy, since=wall) if proxy else None)
    note(f"{spec.name} built in {time.monotonic() - start:.0f} s")


@task_action
def packer_stage(stage: Stage, parent: Path | None, *, root: Path, packer_cfg: PackerConfig,
                 explicit_var_files: Sequence[Path], variables: Mapping[str, Any], accelerator: str,
                 ansible_cfg: Path | None, state_dir: Path, tools_dir: Path, logfile: Path,
                 digests: Path, record: Path,
                 apt: tuple[str | None, apt_proxy.AptProxy | None] = (None, None)) -> None:
    """Build one Packer stage atomically and make its backing reference relative."""
    assert stage.source is not None
    accel_name = accel.choose(accelerator)
    shim = packer.needs_backing_format_shim(packer.packer_version(), packer.qemu_img_version())
    merged_cfg = ansible_cfg_mod.write(ansible_cfg, root / "cache" / "facts" / stage.name,
                                       state_dir / "ansible" / f"{stage.name}.cfg")
    env = packer.environment(root=root, tools_dir=packer.write_shim(tools_dir) if shim else None,
                             ansible_cfg=merged_cfg)
    runtime = dict(variables)
    if "accelerator" in packer_cfg.variables:
        runtime["accelerator"] = accel_name
    if stage.iso is not None and "iso_url" in stage.source.attr_vars:
        # Point the template at the verified copy in the ISO store; Packer re-checks it.
        cached = stage.iso[2]
        runtime[stage.source.attr_vars["iso_url"]] = str(cached)
        if "iso_checksum" in stage.source.attr_vars:
            runtime[stage.source.attr_vars["iso_checksum"]] = "sha256:" + manifest.file_sha256(cached)
    url, proxy = apt
    if url and "apt_proxy" in packer_cfg.variables:
        # Build-time only: reaches the playbooks as an extra var, never the cache key.
        runtime["apt_proxy"] = url
    argv = packer.build_argv(packer_cfg, stage.source.only, runtime, explicit_var_files)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.write_text("")  # one log per build: the last one is what a failure shows
    note(f"building stage {stage.name} with packer ({accel_name}); log: {logfile}")
    start, wall = time.monotonic(), time.time()
    packer.build_stage(stage, parent, argv=argv, env=env, cwd=root, state_dir=state_dir, logfile=logfile)
    checker.record_digest(stage.output, digests)
    manifest.record_build(record, seconds=time.monotonic() - start, image=stage.output,
                          apt=apt_proxy.traffic(proxy, since=wall) if proxy else None)
    size = stage.output.stat().st_size
    note(f"stage {stage.name} built in {time.monotonic() - start:.0f} s ({size / 2**20:.0f} MiB overlay)")


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
    wheels = {wheel.name: "sha256:" + manifest.file_sha256(wheel) for wheel in sorted(dest.glob("*.whl"))}
    tmp = manifest_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"requirements": str(requirements), "wheels": wheels}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, manifest_file)


@task_action
def flatten_image(top: Path, out: Path, *, kernel: Path | None, initrd: Path | None,
                  cfg: Any, logfile: Path, chain: Sequence[Stage], root: Path, records: Path,
                  reports: Path) -> None:
    """Flatten and compress the chain into the final image and write its manifest."""
    from vaultdoit import final, manifest

    def make_manifest(image: Path, digest: str) -> str:
        data = manifest.build(image=image, sha256=digest, compression=cfg.compression, chain=list(chain),
                              root=root, records=records, reports=reports)
        data["image"]["name"] = out.name
        return manifest.dump(data)

    logfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.write_text("")
    note(f"flattening {top.name} into {out} ({cfg.compression}); log: {logfile}")
    start = time.monotonic()
    digest = final.flatten(top, out, kernel=kernel, initrd=initrd, cfg=cfg, logfile=logfile,
                           manifest=make_manifest)
    note(f"final image {out.name}: {out.stat().st_size / 2**20:.0f} MiB in "
         f"{time.monotonic() - start:.1f} s, sha256 {digest[:16]}…")


@task_action
def verify_image(spec: Any, report_file: Path) -> TaskFailed | None:
    """Boot the final image on a throwaway snapshot and run the checks (see vm.py)."""
    from vaultdoit import vm

    note(f"boot test of {spec.image.name} (serial log in {spec.log_dir})")
    report = vm.boot_test(spec)
    sys.stderr.write(report.render() + "\n")
    report_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = report_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, report_file)
    if not report.ok:
        failed = [c.name for c in report.checks if not c.ok]
        return TaskFailed(f"boot test failed: {', '.join(failed)} (report: {report_file})")
    return None
