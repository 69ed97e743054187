"""Run one Packer stage: the right environment, the qemu-img workaround, atomic output."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vaultdoit import owned, proc, qemu_img
from vaultdoit.errors import VaultError
from vaultdoit.model import PackerConfig, Stage
from vaultdoit.paths import building_marker

SHIM = """#!/bin/sh
# Written by vaultdoit. Packer < 1.7 runs "qemu-img create -b PARENT" without
# "-F", which QEMU >= 6.1 refuses ("Backing file specified without backing
# format"); add the format. Everything else goes to the real qemu-img.
real={real}
if [ "$1" = create ]; then
  case " $* " in
    *" -F "*) ;;
    *" -b "*) shift; exec "$real" create -F qcow2 "$@" ;;
  esac
fi
exec "$real" "$@"
"""


def _version(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return (0,)
    return tuple(int(p) for p in match.groups() if p is not None)


@functools.cache
def packer_version() -> tuple[int, ...]:
    """Installed Packer version, e.g. (1, 6, 6)."""
    return _version(proc.run(["packer", "version"], capture=True, env={"CHECKPOINT_DISABLE": "1"}))


@functools.cache
def qemu_img_version() -> tuple[int, ...]:
    """Installed qemu-img version, e.g. (7, 2, 22)."""
    return _version(proc.run(["qemu-img", "--version"], capture=True))


@functools.cache
def tool_version(program: str) -> str:
    """``program --version``'s first version number as text ("1.3.5"), or "unknown"."""
    try:
        text = proc.run([program, "--version"], capture=True)
    except VaultError:
        return "unknown"
    return ".".join(map(str, _version(text)))


def needs_backing_format_shim(packer: tuple[int, ...], qemu: tuple[int, ...]) -> bool:
    """Packer's built-in QEMU builder (< 1.7) omits ``-F``; QEMU >= 6.1 requires it."""
    return packer < (1, 7) and qemu >= (6, 1)


def write_shim(tools_dir: Path) -> Path:
    """Write the qemu-img wrapper and return the folder that holds it (to put first on PATH).

    Builds side by side call this at once: the wrapper goes into a folder named by its
    content, written under a name of its own and renamed into place, so it is written once
    per content and no build ever runs a half-written or replaced file.
    """
    real = proc.find_tool("qemu-img")
    text = SHIM.format(real=real)
    folder = tools_dir / hashlib.sha256(text.encode()).hexdigest()[:16]
    shim = folder / "qemu-img"
    try:
        if shim.read_text() == text:
            return folder
    except OSError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".qemu-img-", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, shim)
    except BaseException:
        os.unlink(tmp)
        raise
    return folder


def environment(*, root: Path, tools_dir: Path | None, ansible_cfg: Path | None,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ``packer build``: our tools first on PATH, no phone-home."""
    path = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    if tools_dir is not None:
        path.insert(0, str(tools_dir))
    env = {
        "PATH": os.pathsep.join(path),
        "CHECKPOINT_DISABLE": "1",  # no update check: builds must work offline
        "PACKER_CACHE_DIR": str(root / "cache" / "packer"),
        "PACKER_NO_COLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    if ansible_cfg is not None:
        env["ANSIBLE_CONFIG"] = str(ansible_cfg)
    if extra:
        env.update(extra)
    return env


def hcl_value(value: Any) -> str:
    """``value`` as HCL text: JSON is HCL, but ``${`` and ``%{`` start templates in HCL strings."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def write_var_file(path: Path, variables: Mapping[str, Any]) -> Path | None:
    """A private ``*.pkrvars.hcl`` with ``variables`` (None when there are none); the caller removes it."""
    if not variables:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # values may be secrets
    with os.fdopen(fd, "w") as fh:
        fh.write("# Written by vaultdoit for one build; removed when it ends.\n")
        for name, value in sorted(variables.items()):
            fh.write(f"{name} = {hcl_value(value)}\n")
    return path


def build_argv(config: PackerConfig, only: str, variables: Mapping[str, Any],
               explicit_var_files: Sequence[Path], on_error: str | None = None) -> list[str]:
    """``packer build`` of one source of a template folder (``on_error``: Packer's ``-on-error``)."""
    argv = ["packer", "build", "-color=false", "-timestamp-ui", f"-only={only}"]
    if on_error is not None:
        argv.append(f"-on-error={on_error}")
    for var_file in explicit_var_files:
        argv.append(f"-var-file={var_file}")
    for name, value in sorted(variables.items()):
        text = value if isinstance(value, str) else json.dumps(value)
        argv += ["-var", f"{name}={text}"]
    argv.append(str(config.directory))
    return argv


def _prev(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.vaultdoit-prev")


def interrupted(state_dir: Path, stage: Stage) -> bool:
    """True when an earlier build of ``stage`` was killed before it could clean up."""
    return building_marker(state_dir, stage.id).exists()


def recover(state_dir: Path, stage: Stage) -> None:
    """Undo a build that was killed outright: drop its partial output, restore the previous image."""
    marker = building_marker(state_dir, stage.id)
    if not marker.exists():
        return
    folder = stage.output.parent
    prev = _prev(folder)
    if prev.exists():
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(prev, folder)
    marker.unlink()


def build_stage(stage: Stage, backing: Path | None, *, argv: Sequence[str], env: Mapping[str, str],
                cwd: Path, state_dir: Path, logfile: Path, watch: Callable[[], str | None] | None = None,
                watch_interval: float = 5.0, secrets: Sequence[str] = (),
                keep_failed: Callable[[Path], None] | None = None) -> None:
    """Run Packer for ``stage`` so that its image appears complete or not at all.

    Packer writes into the template's output_directory and refuses an existing
    one, so the previous image's folder is moved aside first and put back if
    the build fails or is interrupted. A marker file covers a hard kill: the
    next run sees it, restores the previous image and rebuilds. ``backing`` is
    what the new image must be an overlay on (the parent's image or a root image).
    ``watch`` (the stall watchdog) is called every ``watch_interval`` s while Packer runs.
    ``secrets`` never reach the log or the console (see ``sensitive.values``).
    ``keep_failed`` is given the folder of a failed build (not of an interrupted one)
    before it is removed: it may move it away to keep the disk.
    """
    folder = stage.output.parent
    if not owned.is_ours(folder, cwd):
        raise VaultError("this folder was not made by a stage build; building would replace it",
                         file=folder, hint="point output_directory at a new folder or move this one away")
    prev = _prev(folder)
    # A VM left running by a killed build would go on writing here.
    proc.ensure_unused(folder, prev)
    state_dir.mkdir(parents=True, exist_ok=True)
    recover(state_dir, stage)
    marker = building_marker(state_dir, stage.id)
    marker.write_text(json.dumps({"stage": stage.id, "output": str(stage.output)}))
    if folder.exists():
        shutil.rmtree(prev, ignore_errors=True)
        os.replace(folder, prev)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc.run(argv, logfile=logfile, env=env, cwd=cwd, echo=True, watch=watch, watch_interval=watch_interval,
                 secrets=secrets)
        # `-only` matching nothing exits 0 having built nothing: check the artifact.
        qemu_img.check_stage(stage.output, backing)
        if backing is not None:
            qemu_img.rebase_relative(stage.output, backing, logfile=logfile)
    except BaseException as exc:
        if keep_failed is not None and isinstance(exc, Exception) and folder.exists():
            keep_failed(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if prev.exists():
            os.replace(prev, folder)
        marker.unlink(missing_ok=True)
        raise
    shutil.rmtree(prev, ignore_errors=True)
    marker.unlink(missing_ok=True)
