"""Project settings: the frozen ProjectConfig that vault.toml is read into (see config_file).

Without vault.toml a project is one pipeline whose templates sit directly in
``packer/``. With it, ``[profiles.<name>]`` tables describe several pipelines
(``packer/<name>/`` each) and ``profile`` names the default one.

Plain data and ``confine()``, which keeps what vaultdoit writes inside the
project: a run whose plan is kept (see plancache) needs this module, never the
reader.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultdoit.errors import ConfigError
from vaultdoit.model import DEFAULT_APT_PORT
from vaultdoit.paths import BuildPaths

CONFIG_FILE = "vault.toml"
CONFINE_HINT = "keep it under the project folder or list its folder in allowed_paths"


# --- the result ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapConfig:
    """A stage made by a bootstrap tool rather than Packer (e.g. mmdebstrap)."""

    name: str
    tool: str
    suite: str
    packages: Path
    configure: Path
    disk_size: str
    output: Path
    kernel: Path
    initrd: Path
    mirror: str | None = None


@dataclass(frozen=True)
class FinalConfig:
    """How the final image is flattened and compressed."""

    compression: str = "zstd"
    coroutines: int = 8  # qemu-img convert -m: parallel compression


@dataclass(frozen=True)
class VerifyConfig:
    """The boot test of the final image."""

    user: str = "vault"
    key: Path | None = None
    checks: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    boot_timeout: float = 600.0
    memory: int = 1024


@dataclass(frozen=True)
class StageConfig:
    """``[stages.<name>]``: settings of one stage that override the project's."""

    name: str
    stall_timeout: float | None = None  # None: the project's stall_timeout
    memory: int | None = None  # MiB of the build VM; None: the project's (then the host's default)
    cpus: int | None = None
    # Where the table was written ("<file>:<line>"), for the planner's "no such stage" error.
    origin: str = field(default=CONFIG_FILE, compare=False)


@dataclass(frozen=True)
class VariantConfig:
    """``[variants.<name>]``: one variant's Packer variable values and var files."""

    name: str
    variables: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    var_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ProjectConfig:
    """Resolved settings of one profile of a project."""

    root: Path
    profile: str | None
    image_name: str
    packer_dir: Path
    build_dir: Path
    var_files: tuple[Path, ...] = ()
    variables: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    ansible_cfg: Path | None = None
    accelerator: str = "auto"
    build_user: str = "vault"
    build_key: Path = Path("build/keys/build_ed25519")
    access_key: Path = Path("build/keys/access_ed25519")
    requirements: Path | None = None
    bootstraps: tuple[BootstrapConfig, ...] = ()
    final: FinalConfig = FinalConfig()
    verify: VerifyConfig = VerifyConfig()
    top: str | None = None  # the stage flattened into the final image (default: the only leaf)
    apt_proxy: str = "auto"  # auto (our apt-cacher-ng if installed), off, or an external proxy URL
    apt_proxy_port: int = DEFAULT_APT_PORT
    # Folders outside the project that vaultdoit may write to (symlinks resolved).
    allowed_paths: tuple[Path, ...] = ()
    stall_timeout: float = 0.0  # 0: each stage decides
    stage_configs: tuple[StageConfig, ...] = ()
    signing_key: Path | None = None  # signs the final image's checksum file and SBOM (only read)
    # Who signs: the public key beside signing_key ("type base64"), else its path. A new key
    # at the same path signs again; the private key is never read here.
    signer: str | None = None
    variants: tuple[VariantConfig, ...] = ()
    variant: str = "all"  # the variants plain `doit` builds (see variants.choose)
    memory: int | None = None  # build VMs' MiB; None: from the host (see resources)
    cpus: int | None = None
    keep_failed: bool = False  # keep a failed stage's disk aside (build/<profile>/failed/<stage>/)
    # The shared stage cache: "<registry>/<repository>" (vault.toml or the environment), or None.
    remote_cache: str | None = None
    remote_push: bool = True
    remote_chunk_size: int = 256 * 2**20
    # Key files shared by a team (from the environment): the keys task copies them into place.
    build_key_from: Path | None = None
    access_key_from: Path | None = None

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def paths(self) -> BuildPaths:
        """Every path of this profile's build (see vaultdoit.paths)."""
        return BuildPaths(self.root, self.profile, self.image_name)

    @property
    def final_dir(self) -> Path:
        return self.paths.final_dir

    @property
    def final_image(self) -> Path:
        """The final image of a project with one image (see BuildPaths.final_image)."""
        return self.paths.final_image()

    @property
    def logs_dir(self) -> Path:
        return self.paths.logs_root

    @property
    def state_dir(self) -> Path:
        """vaultdoit's own bookkeeping (doit's dependency DB, digests, markers)."""
        return self.paths.state_dir

    @property
    def failed_dir(self) -> Path:
        """Where ``keep_failed`` puts a failed stage's disk: never a stage's output folder."""
        return self.paths.failed_dir

    @property
    def cache_dir(self) -> Path:
        return self.paths.cache_dir

    @property
    def login_key(self) -> Path:
        """The key the boot test logs in with: ``[verify] key``, else the access key."""
        return self.verify.key or self.access_key

    def stage_config(self, stage: str) -> StageConfig:
        """``[stages.<stage>]`` with the project's values filled in where it sets none."""
        own = next((s for s in self.stage_configs if s.name == stage), StageConfig(stage))
        timeout = self.stall_timeout if own.stall_timeout is None else own.stall_timeout
        return StageConfig(stage, stall_timeout=timeout,
                           memory=self.memory if own.memory is None else own.memory,
                           cpus=self.cpus if own.cpus is None else own.cpus, origin=own.origin)

    def confine(self, path: Path, setting: str, *, value: object = None, file: str | Path | None = None) -> Path:
        """``confine()`` against this project's folder and allowed_paths."""
        return confine(path, self.root, self.allowed_paths, setting, value=value,
                       file=self.config_file if file is None else file)


# --- confinement -----------------------------------------------------------------------------------------------


def _below(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def confine(path: Path, root: Path, allowed: Sequence[Path] = (), setting: str = "path", *,
            value: object = None, file: str | Path | None = CONFIG_FILE, holder: bool = False) -> Path:
    """Refuse a path vaultdoit would write outside the project and the allowed folders.

    ``path`` (relative paths are taken from ``root``) must lie strictly below
    ``root`` or below one of ``allowed``, after resolving symlinks: a symlink
    that leads out of the project counts as outside. Returns the absolute,
    normalised (not resolved) path. Otherwise raises a ConfigError of one
    line naming ``setting`` (and ``value``, as written) in ``file``.
    A ``holder`` (a folder that only holds outputs, like build/) may also be
    an allowed folder itself.
    """
    full = Path(os.path.normpath(root / path))
    real = os.path.realpath(full)
    folders = [os.path.realpath(root), *(os.path.realpath(a) for a in allowed)]
    if any(_below(real, f) for f in folders) or (holder and real in folders[1:]):
        return full
    from vaultdoit.settings import toml_text  # an error only

    what = setting if value is None else f"{setting} = {toml_text(value)}"
    if real in folders:
        raise ConfigError(f"{what} is {'the project folder' if real == folders[0] else 'an allowed folder'} "
                          "itself", file=file, hint="name a file or folder under it")
    link = _link_out(full, root, folders)
    if link is not None:
        raise ConfigError(f"{what} is outside the project: {link}", file=file, hint=CONFINE_HINT)
    raise ConfigError(f"{what} is outside the project", file=file, hint=CONFINE_HINT)


def _link_out(full: Path, root: Path, folders: Sequence[str]) -> str | None:
    """The symlink inside the project through which ``full`` leaves it: "a/b is a symlink to /x"."""
    root = Path(os.path.normpath(root))
    if full != root and root not in full.parents:
        return None
    node = root
    for part in full.relative_to(root).parts:
        node = node / part
        if node.is_symlink():
            target = os.path.realpath(node)
            if not any(_below(target, f) for f in folders):
                return f"{node.relative_to(root)} is a symlink to {target}"
    return None
