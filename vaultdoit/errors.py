"""Error types. Library code raises these; only cli.py maps them to exit codes."""

from __future__ import annotations

from pathlib import Path


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


class RemoteError(VaultError):
    """The shared stage cache (an OCI registry) cannot be reached or refused a request."""


class RemoteDataError(RemoteError):
    """What the shared stage cache sent is not what it promised (digest, size, layout)."""
