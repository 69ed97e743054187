"""Get into an image: ``vaultdoit run`` boots one with its console here, ``vaultdoit ssh`` logs in.

Any stage's image, the final one, or a failed build's disk kept by
``keep_failed`` boots on a throwaway snapshot (``snapshot=on``: nothing is
written to the image) with its serial console on this terminal and its SSH
port forwarded on 127.0.0.1 only. While it runs, a small record in the
build's state folder (``run/<target>.json``) tells ``vaultdoit ssh`` the port,
the user and the keys: for a stage the build user with the build key, and
the access key too (the stage that runs the clean-up role swaps them), for
the final image the boot test's user and key.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vaultdoit import accel, proc, vm
from vaultdoit.errors import BootError, ConfigError
from vaultdoit.outputs import initrd_path, kernel_path
from vaultdoit.project import Project
from vaultdoit.watchdog import qemuarg_values

FINAL = "final"
FAILED = "failed:"
QUIT_KEYS = "Ctrl-A X"  # QEMU's mux escape on a console on stdio


@dataclass(frozen=True)
class Target:
    """An image to boot and how to log in to it."""

    name: str  # "final", a stage's name, "failed:<stage>" or a file
    image: Path
    kernel: Path | None
    initrd: Path | None
    append: str
    user: str
    key: Path
    build_hint: str  # how to make the image when it is missing
    more_keys: tuple[Path, ...] = ()  # also offered, after ``key``


@dataclass(frozen=True)
class Session:
    """A running ``vaultdoit run``: what ``vaultdoit ssh`` needs."""

    target: str
    pid: int  # the vaultdoit run process
    port: int
    user: str
    key: str
    image: str
    started: float
    accelerator: str
    more_keys: tuple[str, ...] = ()


def _stage_boot(project: Project, name: str) -> tuple[Path | None, Path | None, str]:
    """Kernel, initrd and kernel command line a stage's image boots with (its template's, or its base's)."""
    root = project.config.root
    for stage in reversed(project.chain(project.stage(name))):
        if stage.source is not None:
            kernels = qemuarg_values(stage.source.attrs, "-kernel")
            if kernels:
                initrds = qemuarg_values(stage.source.attrs, "-initrd")
                appends = qemuarg_values(stage.source.attrs, "-append")
                return (root / kernels[0], root / initrds[0] if initrds else None,
                        appends[0] if appends else vm.DEFAULT_APPEND)
        if len(stage.extra_outputs) == 2:  # a bootstrapped base: kernel and initrd beside its image
            return stage.extra_outputs[0], stage.extra_outputs[1], vm.DEFAULT_APPEND
    return None, None, vm.DEFAULT_APPEND


def resolve(project: Project, name: str | None) -> Target:
    """The image ``name`` stands for: ``final`` (the default; also ``final_image``) is the (first) final
    image, ``final:<image>`` (or ``final_image:<image>``) one of several, ``stage:<id>`` (or a stage's
    bare id) a stage's, ``failed:<stage>`` a failed build's kept disk, anything else a qcow2 file. The
    mini profile has a stage named final: that one is ``stage:final:<variant>``."""
    cfg = project.config
    names = [s.id for s in project.stages]
    wanted = next((i for i in project.images if i.name and name in (f"{FINAL}:{i.name}", f"final_image:{i.name}")),
                  project.images[0] if name in (None, FINAL, "final_image") else None)
    if wanted is not None:
        out = cfg.paths.final_image(wanted.name)
        boot = [p if p.exists() else None for p in (kernel_path(out), initrd_path(out))]
        label = f"{FINAL}:{wanted.name}" if wanted.name and name not in (None, FINAL, "final_image") else FINAL
        return Target(label, out, boot[0], boot[1], vm.DEFAULT_APPEND, cfg.verify.user,
                      cfg.login_key, f"doit {wanted.task('final_image')}")
    assert name is not None
    failed = name.startswith(FAILED)
    stage_name = name.removeprefix(FAILED).removeprefix("stage:")
    if stage_name in names:
        stage = project.stage(stage_name)
        kernel, initrd, append = _stage_boot(project, stage_name)
        image = cfg.paths.failed_disk(stage.id, stage.output.name) if failed else stage.output
        hint = (f"`doit stage:{stage_name} keep_failed=1` keeps the disk of a failed build" if failed
                else f"doit stage:{stage_name}")
        return Target(f"{FAILED}{stage_name}" if failed else f"stage:{stage_name}", image, kernel, initrd, append,
                      cfg.build_user, cfg.build_key, hint, more_keys=(cfg.access_key,))
    path = Path(name)
    if path.suffix == ".qcow2" or path.is_file():
        image = path if path.is_absolute() else Path.cwd() / path
        return Target(path.name, image, None, None, vm.DEFAULT_APPEND, cfg.verify.user,
                      cfg.login_key, "give the path of an image")
    raise ConfigError(f"no image named {name!r}", file=cfg.packer_dir,
                      hint="name the final image (" + ", ".join(
                          f"{FINAL}:{i.name}" if i.name else FINAL for i in project.images) + "), a stage ("
                           + ", ".join(f"stage:{n}" for n in names) + "), failed:<stage> or a .qcow2 file")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def record_path(project: Project, target: str) -> Path:
    return project.config.state_dir / "run" / f"{_slug(target)}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sessions(project: Project) -> list[Session]:
    """The VMs of this project that ``vaultdoit run`` keeps running now (stale records are removed)."""
    found = []
    for path in sorted((project.config.state_dir / "run").glob("*.json")):
        try:
            session = Session(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if _alive(session.pid):
            found.append(session)
        else:
            path.unlink(missing_ok=True)
    return found


def _check_files(target: Target) -> None:
    if not target.image.is_file():
        raise BootError(f"image {target.name} is not built", file=target.image, hint=target.build_hint)
    for label, path in (("kernel", target.kernel), ("initrd", target.initrd), ("SSH key", target.key)):
        if path is not None and not path.is_file():
            raise BootError(f"{label} not found", file=path, hint=target.build_hint)


@contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end the run like Ctrl-C: the VM is stopped first."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run(project: Project, target: Target, *, memory: int = 2048, cpus: int = 2,
        say: Callable[[str], None] = print) -> int:
    """Boot ``target`` on a throwaway snapshot with its console here until it powers off; QEMU's exit code."""
    from vaultdoit.tasks.specs import probe_spec

    _check_files(target)
    cfg = project.config
    verdict = accel.verdict(cfg.accelerator, probe_spec(project, (target.kernel,) if target.kernel else ()),
                            announce=False)
    if verdict.accelerator == "tcg":
        say(f"vaultdoit: TCG, not KVM ({verdict.reason}): the guest runs several times slower; "
            "a login prompt takes a minute or more")
    spec = vm.BootSpec(image=target.image, kernel=target.kernel, initrd=target.initrd, append=target.append,
                       memory=memory, cpus=cpus, user=target.user, key=target.key, log_dir=cfg.logs_dir)
    port = vm.free_port()
    argv = vm.qemu_argv(spec, verdict.accelerator, port, None, "mon:stdio", reboot=True)
    record = record_path(project, target.name)
    session = Session(target=target.name, pid=os.getpid(), port=port, user=target.user, key=str(target.key),
                      image=str(target.image), started=time.time(), accelerator=verdict.accelerator,
                      more_keys=tuple(str(k) for k in target.more_keys if k.is_file()))
    ssh_name = "" if target.name == FINAL else f" {target.name}"  # the only VM needs no name
    say(f"vaultdoit: booting {target.image.name} on a throwaway snapshot ({verdict.accelerator}); "
        f"SSH on 127.0.0.1:{port}: `vaultdoit ssh{ssh_name}` "
        f"(or ssh {' '.join(f'-i {k}' for k in (target.key, *session.more_keys))} -p {port} "
        f"{target.user}@127.0.0.1); {QUIT_KEYS} quits")
    record.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _signals_stop():
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(session), indent=2) + "\n")
            os.replace(tmp, record)
            return proc.interactive(argv)
    finally:
        record.unlink(missing_ok=True)


def find(project: Project, name: str | None) -> Session:
    """The running session of target ``name``, or the only one."""
    running = sessions(project)
    if name is not None:
        wanted = resolve(project, name).name
        for session in running:
            if session.target == wanted:
                return session
    elif len(running) == 1:
        return running[0]
    if not running or name is not None:
        shown = "" if name in (None, FINAL, "final_image") else f" {name}"
        raise ConfigError(f"no VM of this project is running{' for ' + name if name else ''}",
                          hint=f"start one with `vaultdoit run{shown}` in another terminal")
    raise ConfigError("several VMs run: " + ", ".join(s.target for s in running), hint="name one: vaultdoit ssh TARGET")


def wait_ready(session: Session, timeout: float, say: Callable[[str], None] = print) -> None:
    """Wait until the guest's sshd accepts a key (a guest still booting answers late)."""
    deadline = time.monotonic() + timeout
    told = False
    last = "sshd never answered"
    while time.monotonic() < deadline:
        if not _alive(session.pid):
            raise BootError(f"the VM of {session.target} stopped", hint="start it again with `vaultdoit run`")
        if vm.ssh_banner(session.port, timeout=5.0):
            try:
                code, out = proc.check_output(ssh_argv(session, ["true"]), timeout=vm.SSH_ATTEMPT_TIMEOUT)
            except subprocess.TimeoutExpired:
                code, out = vm.TIMED_OUT, "timed out"
            if code == 0:
                return
            last = out.strip() or f"ssh exit {code}"
        if not told:
            slow = " (TCG: this takes a while)" if session.accelerator == "tcg" else ""
            say(f"vaultdoit: waiting for the guest's sshd on 127.0.0.1:{session.port}{slow}")
            told = True
        time.sleep(2.0)
    raise BootError(f"{session.target}: no SSH login within {timeout:.0f} s (last: {last.splitlines()[-1][:200]})",
                    hint="look at the console of `vaultdoit run`")


def ssh_argv(session: Session, command: list[str]) -> list[str]:
    """The ssh command line into a session (a shell when ``command`` is empty), every key offered."""
    spec = vm.BootSpec(image=Path(session.image), key=Path(session.key), user=session.user, log_dir=Path("."))
    argv = vm.ssh_argv(spec, session.port, "")[:-1]  # all but vm's (empty) command
    more = [word for key in session.more_keys for word in ("-i", key)]
    return [argv[0], *more, *argv[1:], *command]


def ssh(session: Session, command: list[str], *, timeout: float = 600.0, say: Callable[[str], None] = print) -> int:
    """Log in (a shell) or run ``command``; its exit code."""
    wait_ready(session, timeout, say)
    return proc.interactive(ssh_argv(session, command))


def describe(running: list[Session]) -> str:
    return "\n".join(f"{s.target}: {Path(s.image).name} on 127.0.0.1:{s.port} ({s.accelerator}), pid {s.pid}"
                     for s in running)
