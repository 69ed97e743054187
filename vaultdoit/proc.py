"""The only module that runs external programs.

Every program runs from an argv list (never a shell), in its own session so
that Ctrl-C or a failure can stop it and everything it started (QEMU under
Packer), with its output appended to a log file. Failures raise
``CommandFailed`` naming the command, the exit code and the log's last lines.

Every program runs under a small supervisor (``vaultdoit/supervise.py``): a
child subreaper that stops the program and everything below it when the
program ends or when this process dies, by any signal (SIGKILL included).
Only a service that daemonises on purpose (apt-cacher-ng) runs without it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from vaultdoit import sensitive, supervise
from vaultdoit.errors import Busy, CommandFailed, Stalled, ToolNotFound

log = logging.getLogger("vaultdoit")

# Which Debian package provides each program, for the "not installed" hint.
PACKAGES: dict[str, str] = {
    "packer": "packer",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "sfdisk": "fdisk",
    "blkid": "util-linux",
    "mcopy": "mtools",
    "apt-cacher-ng": "apt-cacher-ng",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "newuidmap": "uidmap",
    "fakeroot": "fakeroot",
    "git": "git",
    "xdg-open": "xdg-utils",
    "ansible-playbook": "ansible-core (pip install ansible-core)",
    "docker-registry": "docker-registry",
}

TAIL_LINES = 25
STOP_GRACE = 20.0  # seconds a program gets to clean up after SIGINT (Packer stops its VM)
SUPERVISOR = Path(supervise.__file__)
# The supervisor runs on the interpreter running now, reached through /proc: a virtual
# environment's python may be a symlink into a folder another user cannot enter.
INTERPRETER = "/proc/self/exe" if os.path.exists("/proc/self/exe") else sys.executable
# After SIGTERM the supervisor needs at most this long to stop its tree.
TREE_STOP = supervise.TERM_GRACE + supervise.KILL_DEADLINE + 2.0

# Programs started and not yet finished, with the write end of their supervisor's
# watch pipe (None for an unsupervised service): stop_all() and stop() use it.
_LIVE: dict[subprocess.Popen[bytes], int | None] = {}
_LIVE_LOCK = threading.Lock()


# Searched after PATH: a normal user's PATH often lacks the sbin folders, where
# mke2fs, debugfs and apt-cacher-ng live (they run fine without root).
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def which(name: str) -> str | None:
    """The path of program ``name``: on PATH, in vaultdoit's virtual environment, or in an sbin folder."""
    # Programs installed in the same virtual environment as vaultdoit (ansible-playbook)
    # are found even when the venv is not activated.
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join((venv_bin, *SYSTEM_DIRS)))


def find_tool(name: str) -> str:
    """Return the path of program ``name`` or raise ToolNotFound with the package to install."""
    path = which(name)
    if path is None:
        pkg = PACKAGES.get(name, name)
        raise ToolNotFound(f"{name} not found", hint=f"install {pkg}")
    return path


def _resolve(argv: Sequence[str | os.PathLike[str]]) -> tuple[list[str], str]:
    """argv with the program looked up on PATH, and its display form for logs and errors."""
    args = [os.fspath(a) for a in argv]
    args[0] = find_tool(args[0]) if os.sep not in args[0] else args[0]
    return args, shlex.join([Path(args[0]).name, *args[1:]])


def tail(path: Path | None, lines: int = TAIL_LINES) -> str:
    """Last lines of a log file ("" if there is none)."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024))
        data = fh.read().decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])


def describe_exit(code: int) -> str:
    """Human wording of a process exit status."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == 127:
        return "exit code 127 (command or interpreter not found)"
    return f"exit code {code}"


def _popen(args: list[str], *, daemon: bool = False, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session; under the supervisor unless it is a ``daemon``."""
    if daemon:
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        with _LIVE_LOCK:
            _LIVE[proc] = None
        return proc
    # The supervisor watches the read end; only we hold the write end (not
    # inheritable: no other child gets a copy), so it reads end of file exactly
    # when this process is gone.
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [INTERPRETER, "-I", "-S", str(SUPERVISOR), str(read_end), "--", *args],
            pass_fds=(read_end,),
            start_new_session=True,  # our own process group: we decide how it stops
            **kwargs,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    with _LIVE_LOCK:
        _LIVE[proc] = write_end
    return proc


def _release(proc: subprocess.Popen[bytes]) -> None:
    """Forget a finished program and close its watch pipe."""
    with _LIVE_LOCK:
        write_end = _LIVE.pop(proc, None)
    if write_end is not None:
        os.close(write_end)


def stop(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """Stop ``proc`` and everything it started.

    SIGINT to its process group first (Packer stops its VM and cleans up);
    after ``grace`` seconds SIGTERM to the supervisor, which stops every
    descendant (other process groups included); SIGKILL to the group last.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with _LIVE_LOCK:
        supervised = _LIVE.get(proc) is not None
    if supervised and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=TREE_STOP)
        except subprocess.TimeoutExpired:
            pass
    if not supervised or proc.poll() is None:
        # Unsupervised, or a supervisor that did not finish: kill what is left in the group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def stop_all(grace: float = STOP_GRACE) -> None:
    """Stop every program still running (all at once), e.g. on Ctrl-C while tasks run in threads."""
    with _LIVE_LOCK:
        running = [p for p, fd in _LIVE.items() if fd is not None and p.poll() is None]
    stoppers = [threading.Thread(target=stop, args=(p, grace), daemon=True) for p in running]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join(grace + TREE_STOP + 5)


def _echo(chunk: bytes) -> None:
    """Copy program output to our stderr, which doit may have swapped for a text buffer."""
    from vaultdoit import progress

    stream = sys.stderr
    buffer = None if progress.live_active() else getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(chunk)
    else:
        stream.write(chunk.decode("utf-8", "replace"))
    stream.flush()


REDACTED = sensitive.HIDDEN.encode()


class Redactor:
    """Replaces secret values in the lines of a program's output and in its command line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        texts = {s for s in secrets if s}
        # Output is handled a line at a time: a value that spans lines is hidden line by line.
        texts |= {part for s in texts if "\n" in s for part in s.splitlines() if len(part.strip()) >= sensitive.MIN_SECRET}
        self.secrets = sorted((t.encode() for t in texts), key=len, reverse=True)

    def bytes(self, piece: bytes) -> bytes:
        for secret in self.secrets:
            piece = piece.replace(secret, REDACTED)
        return piece

    def text(self, line: str) -> str:
        return self.bytes(line.encode()).decode("utf-8", "replace")


REDRAW_LIMIT = 65536  # bytes of output without a line end after which it is passed on anyway


def _pump(stream: IO[bytes], out: IO[bytes] | int, on_progress: Callable[[str], None] | None = None,
          redactor: Redactor | None = None) -> None:
    """Copy a program's output to our stderr and its log, line by line as it arrives.

    A piece ending in ``\r`` redraws a progress display (``qemu-img -p``): it goes
    to ``on_progress`` if given, else to a terminal as it is, never to the log or
    to a non-terminal, where only the last state before the next line is kept.
    ``redactor``'s secrets are taken out of every piece before it goes anywhere.
    """
    from vaultdoit import progress

    redraw = progress.redraws(sys.stderr) and on_progress is None
    pending = b""
    last_redraw: bytes | None = None
    hide = redactor.bytes if redactor is not None else (lambda piece: piece)

    def line(piece: bytes) -> None:
        nonlocal last_redraw
        shown: bytes | None = piece + b"\n"
        if not piece.strip() and last_redraw is not None:
            # A progress display ends with a line end: keep its final state in the log.
            piece = last_redraw.strip()
            shown = b"\n" if redraw else None if on_progress is not None else piece + b"\n"
        last_redraw = None
        if shown is not None:
            _echo(shown)
        if not isinstance(out, int):
            out.write(piece + b"\n")
            out.flush()  # so `tail -f` on the log follows the build

    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        pending += chunk
        while True:
            cut = min((i for i in (pending.find(b"\n"), pending.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            piece, end, pending = hide(pending[:cut]), pending[cut:cut + 1], pending[cut + 1:]
            if end == b"\n":
                line(piece)
            elif piece.strip():
                last_redraw = piece
                if on_progress is not None:
                    on_progress(piece.decode("utf-8", "replace"))
                elif redraw:
                    _echo(piece + b"\r")
        if len(pending) > REDRAW_LIMIT:
            line(hide(pending))
            pending = b""
    if pending or last_redraw is not None:
        line(hide(pending))


def _wait(proc: subprocess.Popen[bytes], args: list[str], *, timeout: float | None,
          watch: Callable[[], str | None] | None, interval: float) -> None:
    """Wait for ``proc``; raise TimeoutExpired past ``timeout``, Stalled when ``watch`` says so."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = interval if watch is not None else None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(args, timeout or 0)
            step = left if step is None else min(step, left)
        try:
            proc.wait(timeout=step)
            return
        except subprocess.TimeoutExpired:
            pass
        if watch is not None:
            reason = watch()
            if reason:
                raise Stalled(reason)


def _open_log(logfile: Path | None) -> IO[bytes] | int:
    if logfile is None:
        return subprocess.DEVNULL
    logfile.parent.mkdir(parents=True, exist_ok=True)
    return logfile.open("ab")


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    logfile: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    capture: bool = False,
    secrets: Iterable[str] = (),
    echo: bool = False,
    timeout: float | None = None,
    watch: Callable[[], str | None] | None = None,
    watch_interval: float = 1.0,
    daemon: bool = False,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Run ``argv`` to completion; return its stdout when ``capture`` is set.

    Output goes to ``logfile`` (appended, with a ``+ command`` header); with
    ``echo`` it is also copied to our stderr so long work shows progress.
    ``watch`` (not with ``capture``) is called every ``watch_interval`` seconds
    while the program runs; a non-empty answer stops it and raises Stalled with
    that text. ``secrets`` (with ``echo``) are replaced by ``<sensitive>`` in the
    command line and the output, before either reaches the log or our stderr.
    ``daemon``: the program starts a service that must keep running
    after it exits (apt-cacher-ng), so it runs without the supervisor. With
    ``echo``, ``progress`` gets the lines a program redraws with ``\r``
    (``qemu-img -p``) instead of the terminal and the log.
    Raises ToolNotFound, CommandFailed or Stalled.
    """
    args, cmdline = _resolve(argv)
    secrets = tuple(s for s in secrets if s)
    redactor = Redactor(secrets) if secrets else None
    if redactor is not None:
        assert echo and not capture, "secrets are kept out of output that is pumped (echo)"
        cmdline = redactor.text(cmdline)
    log.debug("+ %s", cmdline)
    out = _open_log(logfile)
    if not isinstance(out, int):
        out.write(f"+ {cmdline}\n".encode())
        out.flush()
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    stdout_target: int | IO[bytes]
    stdout_target = subprocess.PIPE if (capture or echo) else out
    proc = _popen(
        args,
        daemon=daemon,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=stdout_target,
        stderr=out if capture else (subprocess.STDOUT if echo else out),
        env=full_env,
        cwd=cwd,
    )
    captured = b""
    pump: threading.Thread | None = None
    try:
        if capture:
            captured, _ = proc.communicate(stdin, timeout=timeout)
        else:
            if stdin is not None and proc.stdin:
                proc.stdin.write(stdin)
                proc.stdin.close()
            if echo and proc.stdout:
                pump = threading.Thread(target=_pump, args=(proc.stdout, out, progress, redactor), daemon=True)
                pump.start()
            _wait(proc, args, timeout=timeout, watch=watch, interval=watch_interval)
            if pump is not None:
                pump.join()
    except BaseException:
        # Ctrl-C, timeout, a stall or any error: never leave the program (or its VM) behind.
        stop(proc)
        if pump is not None:
            pump.join(timeout=5)
        if not isinstance(out, int):
            out.write(f"[vaultdoit] stopped {cmdline}\n".encode())
            out.close()
        raise
    finally:
        _release(proc)
    if not isinstance(out, int):
        out.close()
    if proc.returncode != 0:
        last_lines = tail(logfile) if logfile else captured.decode("utf-8", "replace")[-4000:]
        raise CommandFailed(
            f"command failed with {describe_exit(proc.returncode)}: {cmdline}",
            returncode=proc.returncode,
            log=logfile,
            tail=last_lines,
        )
    return captured.decode("utf-8", "replace")


@contextmanager
def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    logfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-running program (a VM, a service) and stop it when the block exits."""
    args, cmdline = _resolve(argv)
    log.debug("+ %s &", cmdline)
    out = _open_log(logfile)
    assert not isinstance(out, int)
    out.write(f"+ {cmdline} &\n".encode())
    out.flush()
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = _popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
    try:
        yield proc
    finally:
        stop(proc, grace=5.0)
        _release(proc)
        out.close()



def interactive(argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
                started: Callable[[subprocess.Popen[bytes]], None] | None = None) -> int:
    """Run a program on our terminal (a VM's console, an SSH shell) and return its exit status.

    It stays in our process group so it can read the terminal; ``started`` is called
    once it runs. Ctrl-C, or any error here, stops it before the exception goes on.
    """
    args, cmdline = _resolve(argv)
    log.debug("+ %s", cmdline)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(args, env=full_env)
    try:
        if started is not None:
            started(proc)
        return proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


def check_output(argv: Sequence[str | os.PathLike[str]], *, timeout: float = 60.0,
                 logfile: Path | None = None) -> tuple[int, str]:
    """Run a short command and return (exit code, combined output) without raising on failure.

    For probes and checks whose failure is an answer, not an error (ssh checks).
    """
    args, cmdline = _resolve(argv)
    log.debug("+ %s", cmdline)
    proc = _popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        stop(proc, grace=2.0)
        raise
    finally:
        _release(proc)
    text = out.decode("utf-8", "replace")
    if logfile is not None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with logfile.open("a") as fh:
            fh.write(f"+ {cmdline}\n{text}[exit {proc.returncode}]\n")
    return proc.returncode, text


def _under(path: str, folders: Sequence[str]) -> bool:
    return any(path == f or path.startswith(f + os.sep) for f in folders)


def _cmdline_paths(pid: str, args: list[str]) -> Iterator[str]:
    """Absolute forms of the path-like pieces of a command line (``file=x,if=virtio`` included)."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = "/"
    for arg in args:
        for piece in arg.replace("=", ",").split(","):
            if os.sep in piece:
                yield os.path.normpath(os.path.join(cwd, piece))


def users_of(folders: Sequence[Path]) -> list[tuple[int, str]]:
    """Processes (pid, program name) that hold files under ``folders`` open or name them in their arguments.

    This process and the programs it started are left out. Processes of other
    users whose open files we may not read are judged by their arguments only.
    """
    targets = [os.path.realpath(f) for f in folders]
    ours = {os.getpid(), *supervise.descendants(os.getpid())}
    found: list[tuple[int, str]] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in ours:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                args = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue
        if not args:
            continue  # a kernel thread or a zombie
        hit = any(_under(p, targets) for p in _cmdline_paths(name, args))
        if not hit:
            try:
                fds = os.listdir(f"/proc/{name}/fd")
            except OSError:
                fds = []
            for fd in fds:
                try:
                    if _under(os.readlink(f"/proc/{name}/fd/{fd}"), targets):
                        hit = True
                        break
                except OSError:
                    continue
        if hit:
            found.append((int(name), Path(args[0]).name))
    return sorted(found)


def ensure_unused(*folders: Path) -> None:
    """Raise Busy when another process (a QEMU left by a killed build) still uses one of ``folders``."""
    for folder in folders:
        if not folder.exists():
            continue
        users = users_of([folder])
        if not users:
            continue
        pid, program = users[0]
        try:
            where = folder.resolve().relative_to(Path.cwd())
        except ValueError:
            where = folder
        others = len(users) - 1
        more = f" (so do {others} other process{'es' if others > 1 else ''})" if others else ""
        raise Busy(f"{program} (pid {pid}) still uses {where}/{more}",
                   hint=f"stop it, e.g. kill {' '.join(str(p) for p, _ in users)}")
