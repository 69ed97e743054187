"""Error types. Library code raises these; only cli.py maps them to exit codes."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from types import TracebackType


class VaultError(Exception):
    """A problem the user can fix: one line naming the file, the problem and the fix."""

    def __init__(self, message: str, *, file: str | Path | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.file}: {self.message}" if self.file else self.message
        if self.hint:
            text += f" (fix: {self.hint})"
        return text


class ConfigError(VaultError):
    """vault.toml or project layout is wrong."""


class TemplateError(VaultError):
    """A Packer template cannot be read or resolved."""


class PlaybookError(VaultError):
    """An Ansible playbook or role cannot be read."""


class GraphError(VaultError):
    """The stage graph is inconsistent (missing parent, cycle, duplicate output)."""


class ToolNotFound(VaultError):
    """A required program is not installed."""


class CommandFailed(VaultError):
    """An external program exited non-zero."""

    def __init__(self, message: str, *, returncode: int, log: Path | None = None, tail: str = "") -> None:
        super().__init__(message, hint=f"full log: {log}" if log else None)
        self.returncode = returncode
        self.log = log
        self.tail = tail

    def __str__(self) -> str:
        text = super().__str__()
        if self.tail:
            text += "\n--- last lines of the log ---\n" + self.tail
        return text


class Stalled(VaultError):
    """A program (a build VM) made no progress for too long and was stopped."""


class ArtifactError(VaultError):
    """A built artifact is missing or not what the stage promised."""


class BootError(VaultError):
    """An image could not be booted far enough to test it."""


class ScanError(VaultError):
    """An image (or a key to look for) cannot be read as the leak scan was asked."""


class Busy(VaultError):
    """Another process uses the build's files, or holds the build lock."""


class LockBusy(Busy):
    """Another build holds the project's lock and this one was told not to wait."""


class FileProblem(VaultError):
    """An operating-system error on a file (permission, read-only, disk full, missing)."""


# errno -> what to do about it; {path} and {folder} are filled in.
_OS_HINTS: dict[int, str] = {
    errno.EACCES: "check the owner and mode of {path} and its folders (ls -ld), or run as their owner",
    errno.EPERM: "check the owner and mode of {path} and its folders (ls -ld), or run as their owner",
    errno.EROFS: "its file system is mounted read-only: remount it read-write or move the project",
    errno.ENOSPC: "free space on the file system that holds {folder} (df -h {folder})",
    errno.EDQUOT: "your disk quota is used up on the file system that holds {folder}",
    errno.ENOENT: "it is missing: check the path, or run the task that makes it",
    errno.ENOTDIR: "a file stands where a folder is expected in the path",
    errno.EISDIR: "a folder stands where a file is expected",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


def _open_file_in(tb: TracebackType | None) -> str | None:
    """The name of a file object open in the innermost frame that has one (writes fail without a path)."""
    names: list[str] = []
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, str):
                names.append(name)
        tb = tb.tb_next
    return names[-1] if names else None


def os_error(err: OSError) -> FileProblem:
    """One line for an OSError: ``path: what went wrong (fix: what to do)``."""
    found = err.filename if err.filename is not None else _open_file_in(err.__traceback__)
    path = shown_path(found) if isinstance(found, (str, bytes, os.PathLike)) else None
    text = err.strerror or str(err)
    if err.filename2 is not None:
        text += f" (renaming to {shown_path(err.filename2)})"
    folder = (os.path.dirname(path) or ".") if path is not None else "build/"
    hint = _OS_HINTS.get(err.errno or 0)
    return FileProblem(text, file=path, hint=hint.format(path=path, folder=folder) if hint else None)


def shown_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """``path`` relative to the working folder (the project root under doit) when inside it."""
    text = os.fsdecode(path)
    absolute = os.path.abspath(text)
    cwd = os.getcwd()
    return os.path.relpath(absolute, cwd) if absolute.startswith(cwd + os.sep) else text


class RemoteError(VaultError):
    """The shared stage cache (an OCI registry) cannot be reached or refused a request."""


class RemoteDataError(RemoteError):
    """What the shared stage cache sent is not what it promised (digest, size, layout)."""
