"""One build at a time per project: an flock on ``build/.vaultdoit.lock``.

The kernel releases the lock when its holder exits or dies (SIGKILL
included), so a crash never leaves a stale lock behind. Who holds it (pid,
command, the task it is running and since when) is kept up to date in
``build/.vaultdoit.lock.json`` so that a second build can say whom it waits for.

A second build waits by default; ``VAULTDOIT_LOCK=fail`` in the environment
(or ``lock=fail`` on doit's command line) makes it fail at once instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vaultdoit.errors import ConfigError, LockBusy, shown_path

LOCK_NAME = ".vaultdoit.lock"
INFO_NAME = ".vaultdoit.lock.json"
ENV = "VAULTDOIT_LOCK"
MODES = ("wait", "fail")

# doit commands that only read the project and its state: they never wait for a build.
# explain and status are vaultdoit's doit commands (vaultdoit/doit_cmds.py): they only read.
READ_ONLY_COMMANDS = frozenset({"list", "info", "help", "dumpdb", "tabcompletion", "explain", "status"})

# Locks this process holds, by lock file: the dodo file may be loaded twice in
# one process (doit auto), and a second flock on a new descriptor would wait for
# ourselves.
_HELD: dict[Path, BuildLock] = {}


def doit_command(args: Sequence[str]) -> str:
    """The doit command that ``args`` (``sys.argv[1:]``) runs, parsed as ``DoitMain.run`` does.

    Loader options (``-f``, ``-d``, ``-k``) may come before the command,
    ``name=value`` words are variables, and a first word that is not a command
    (a task name, an option of ``run``) means ``run``.
    """
    from doit.cmdparse import CmdOption, CmdParse, CmdParseError
    from doit.doit_cmd import DoitMain
    from doit.cmd_base import DodoTaskLoader

    try:
        _params, rest = CmdParse([CmdOption(o) for o in DodoTaskLoader.cmd_options]).parse_only(list(args))
    except CmdParseError:
        rest = list(args)
    words = [a for a in rest if not (a[:1] != "-" and "=" in a)]
    commands = {cmd.get_name() for cmd in DoitMain.DOIT_CMDS} | {"explain", "status"}  # doit_cmds.py
    return words[0] if words and words[0] in commands else "run"


def takes_lock(command: str) -> bool:
    """Whether doit ``command`` changes the build (run, clean, forget, ignore, reset-dep, strace, auto)."""
    return command not in READ_ONLY_COMMANDS


def mode(variable: str | None = None) -> str:
    """``wait`` or ``fail``: doit's ``lock=`` variable first, then $VAULTDOIT_LOCK."""
    source, value = ("lock", variable) if variable else (ENV, os.environ.get(ENV) or "wait")
    if value not in MODES:
        raise ConfigError(f"must be {' or '.join(MODES)}", file=f"{source}={value}",
                          hint=f"{source}=fail fails at once when another build runs, {source}=wait waits")
    return value


def _clock(stamp: float) -> str:
    when = time.localtime(stamp)
    if time.strftime("%Y-%m-%d", when) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", when)
    return time.strftime("%Y-%m-%d %H:%M:%S", when)


def _flock_holder(path: Path) -> int | None:
    """The pid the kernel lists as holding an flock on ``path`` (/proc/locks)."""
    try:
        st = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:02:131 0 EOF" (blocked waiters carry "->").
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[2] != "->":
            try:
                _major, _minor, inode = fields[5].split(":")
                if int(inode) == st.st_ino:
                    return int(fields[4])
            except ValueError:
                continue
    return None


def _program(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode("utf-8", "replace") for a in args if a)


class BuildLock:
    """The build lock of the project at ``root`` (``build/.vaultdoit.lock``) and its holder record."""

    def __init__(self, root: Path) -> None:
        self.path = root / "build" / LOCK_NAME
        self.info_path = root / "build" / INFO_NAME
        self._fd: int | None = None
        self._info: dict[str, Any] = {}
        self._writing = threading.Lock()  # tasks in several threads note their start

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """Who holds the lock, for one line: pid, command, task and since when."""
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            info = {}
        kernel_pid = _flock_holder(self.path)
        pid = info.get("pid") if isinstance(info, dict) else None
        if pid is None or (kernel_pid is not None and pid != kernel_pid):
            # The record is not (yet) the holder's own.
            return f"pid {kernel_pid} ({_program(kernel_pid)})" if kernel_pid else "another process"
        text = f"pid {pid} ({info.get('command', '?')})"
        if info.get("task"):
            return text + f", running {info['task']} since {_clock(float(info.get('task_since', 0)))}"
        return text + f", since {_clock(float(info.get('since', 0)))}"

    def acquire(self, command: str, *, wait: bool = True, say: Callable[[str], None] | None = None) -> None:
        """Take the lock; when another build holds it, say who and wait (or raise LockBusy)."""
        path = self.path.resolve()
        if path in _HELD:
            self._fd = _HELD[path]._fd
            self._info = _HELD[path]._info
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.holder()
                if not wait:
                    raise LockBusy(f"another build holds the lock: {holder}", file=shown_path(self.path),
                                   hint=f"wait for it to finish, or drop lock=fail / {ENV}=fail to wait") from None
                (say or _stderr)(f"vaultdoit: {shown_path(self.path)} is held by {holder}; waiting for it to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _HELD[path] = self
        now = time.time()
        self._info = {"pid": os.getpid(), "command": command, "since": now, "task": None, "task_since": now}
        self._write_info()

    def note(self, task: str | None) -> None:
        """Record the task now running (None: between tasks)."""
        if self._fd is None:
            return
        with self._writing:
            self._info.update(task=task, task_since=time.time())
            self._write_info()

    def release(self) -> None:
        """Give the lock up (the kernel also does so when the process ends)."""
        if self._fd is None:
            return
        _HELD.pop(self.path.resolve(), None)
        with contextlib.suppress(OSError):
            self.info_path.unlink()
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None

    def _write_info(self) -> None:
        # Best effort: the record only explains the lock, which is the flock itself.
        tmp = self.info_path.with_name(f"{INFO_NAME}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._info, sort_keys=True) + "\n")
            os.replace(tmp, self.info_path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@contextlib.contextmanager
def held(root: Path, command: str, *, lock_mode: str | None = None) -> Iterator[BuildLock]:
    """Hold the build lock of the project at ``root`` for a block (the vaultdoit CLI's writing commands).

    ``lock_mode``: ``wait`` or ``fail``; None reads $VAULTDOIT_LOCK (default wait).
    """
    lock = BuildLock(root)
    already = lock.path.resolve() in _HELD
    lock.acquire(command, wait=mode(lock_mode) == "wait")
    try:
        yield lock
    finally:
        if not already:
            lock.release()
