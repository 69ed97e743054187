"""A team's shared SSH keys, copied into the project where the keys task would create them.

Stages authorize the build key and the base's key holds its public half, so
machines that each made their own key never share a stage. A team that shares
stages (remote cache, CI caches) distributes one key pair like any CI secret
and names the private key file in VAULTDOIT_BUILD_KEY (and VAULTDOIT_ACCESS_KEY
for the key the image authorizes).
"""

from __future__ import annotations

import os
from pathlib import Path

from vaultdoit import proc
from vaultdoit.errors import ConfigError


def public_key(source: Path, *, logfile: Path | None = None) -> bytes:
    """The public half of private key ``source``: its ``.pub`` beside it, else derived by ssh-keygen."""
    pub = source.with_name(source.name + ".pub")
    if pub.is_file():
        return pub.read_bytes()
    return proc.run(["ssh-keygen", "-y", "-f", str(source)], capture=True, logfile=logfile).encode()


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` (atomically) unless it already holds exactly that."""
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(source: Path, key: Path, *, logfile: Path | None = None) -> None:
    """Copy the private key ``source`` to ``key`` (mode 600) and its public half to ``key``.pub.

    Files already holding the same bytes are left alone, so their mtimes (and the
    stages that depend on the public key) do not move.
    """
    try:
        private = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the shared key: {exc.strerror or exc}", file=source,
                          hint="make the key file readable by this user") from None
    if b"PRIVATE KEY" not in private:
        raise ConfigError("not an SSH private key", file=source,
                          hint="name the private key file (the one without .pub)")
    public = public_key(source, logfile=logfile)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.parent.chmod(0o700)
    _write(key, private, 0o600)
    _write(key.with_name(key.name + ".pub"), public, 0o644)
