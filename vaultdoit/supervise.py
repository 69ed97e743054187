"""A tiny supervisor between vaultdoit and a long-running program: nothing outlives the build.

``proc`` starts every program as ``python supervise.py FD -- PROGRAM ARGS...``.
The supervisor makes itself a child subreaper, so everything the program
starts (Packer's QEMU, mmdebstrap's helpers, double-forked daemons) stays
below it even when it changes session or process group. It then waits for
two things:

- the program exits: every descendant still left is stopped and the
  supervisor exits with the program's status (the same exit code, or the
  same signal), so callers see the program's own result;
- the pipe ``FD`` reaches end of file: only vaultdoit holds its write end,
  and the kernel closes it when vaultdoit dies by any signal, SIGKILL
  included. Every descendant is stopped (SIGTERM, then SIGKILL) and the
  supervisor exits.

SIGTERM to the supervisor stops the whole tree the same way (``proc.stop``
uses it when a program ignores SIGINT). SIGINT is left to the program: the
supervisor shares its process group, so ``proc.stop``'s SIGINT reaches the
program (Packer stops its VM gracefully) and the supervisor waits.

Standard library only, few imports, run with ``python -I -S`` by file path:
it starts with every program, so it must start fast, and it must not depend
on the caller's import path.
"""

from __future__ import annotations

import os
import select
import sys
import time

# The C module behind ``signal``: the same functions and numbers without
# importing ``enum`` (nor ``typing`` below), which would double the start-up time.
import _signal as signal

TYPE_CHECKING = False  # mypy reads this name as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from types import FrameType

PR_SET_CHILD_SUBREAPER = 36
TERM_GRACE = 2.0  # seconds descendants get after SIGTERM before SIGKILL
KILL_DEADLINE = 5.0  # give up re-killing after this (a process stuck in D state)


class _Terminate(Exception):
    """SIGTERM arrived: stop the tree."""


def _set_subreaper() -> None:
    import ctypes  # here, not at the top: proc.py imports this module on every run

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def _parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process we can see."""
    table: dict[int, tuple[int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", "replace")
        except OSError:
            continue  # gone meanwhile
        # The command name is in parentheses and may itself hold spaces or parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 2:
            table[int(name)] = (int(fields[1]), fields[0])
    return table


def descendants(root: int) -> list[int]:
    """Live (not zombie) processes below ``root``."""
    table = _parents()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if table[pid][1] != "Z":
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _reap() -> bool:
    """Collect exited children (orphans re-parented to us included); False when none is left."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_tree(grace: float = TERM_GRACE) -> None:
    """SIGTERM every descendant, SIGKILL what is left after ``grace`` seconds, until none is left."""
    me = os.getpid()
    if not _reap():
        return  # no child, so no descendant (orphans become our children): no /proc walk
    _signal_all(descendants(me), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        _reap()
        left = descendants(me)
        if not left:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    # Repeat: a process may have forked between listing and killing.
    deadline = time.monotonic() + KILL_DEADLINE
    while left and time.monotonic() < deadline:
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.02)
        _reap()
        left = descendants(me)


def _exit_like(status: int) -> None:
    """Exit with the program's status: its exit code, or death by its signal."""
    if status >= 0:
        os._exit(status)
    import resource

    sig = -status
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file of ours
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal that does not kill (none of the exit signals)


def _on_term(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminate


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """A handler, not SIG_IGN: handlers are reset on exec, so the program still gets SIGINT."""


def _wait(pid: int, watch_fd: int) -> int:
    """Wait for the program; return its status as Popen.returncode would be (-N: signal N)."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except OSError:  # Linux < 5.3: poll the program instead
        pidfd = None
    fds = [watch_fd] if pidfd is None else [watch_fd, pidfd]
    while True:
        ready, _, _ = select.select(fds, [], [], 0.2 if pidfd is None else None)
        if watch_fd in ready:
            raise _Terminate  # end of file: vaultdoit is gone
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: supervise.py FD -- PROGRAM [ARGS...]\n")
        os._exit(2)
    watch_fd, program = int(argv[0]), argv[2:]
    signal.signal(signal.SIGINT, _ignore)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    _set_subreaper()
    os.set_inheritable(watch_fd, False)  # the program has no business with it
    try:
        pid = os.posix_spawn(program[0], program, os.environ)  # stdin/stdout/stderr: ours
    except OSError as err:
        sys.stderr.write(f"vaultdoit: cannot run {program[0]}: {err.strerror}\n")
        os._exit(127 if isinstance(err, FileNotFoundError) else 126)
    try:
        status = _wait(pid, watch_fd)
    except _Terminate:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_tree()
        os._exit(143)
    # The program is done; whatever it left running must not outlive it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_tree()
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
