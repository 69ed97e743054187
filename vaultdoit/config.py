"""Project settings: vault.toml (optional) read into a frozen ProjectConfig.

Without vault.toml a project is one pipeline whose templates sit directly in
``packer/``. With it, ``[profiles.<name>]`` tables describe several pipelines
(``packer/<name>/`` each) and ``profile`` names the default one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultdoit.errors import ConfigError

CONFIG_FILE = "vault.toml"
COMPRESSIONS = ("zstd", "zlib", "none")


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
    apt_proxy_port: int = 3142

    @property
    def final_dir(self) -> Path:
        return self.root / "build" / "final"

    @property
    def final_image(self) -> Path:
        return self.final_dir / f"{self.image_name}.qcow2"

    @property
    def logs_dir(self) -> Path:
        return self.root / "build" / "logs"

    @property
    def state_dir(self) -> Path:
        """vaultdoit's own bookkeeping (doit's dependency DB, digests, markers)."""
        return self.build_dir / ".vaultdoit"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"


def find_root(start: Path) -> Path:
    """The project root: the nearest folder upwards with vault.toml or dodo.py and packer/."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file() or ((folder / "dodo.py").is_file() and (folder / "packer").is_dir()):
            return folder
    raise ConfigError("not inside a vaultdoit project (no vault.toml or dodo.py with packer/)",
                      file=start, hint="run from the project root or create one with `vaultdoit init`")


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{where}{key}] must be a table", file=CONFIG_FILE)
    return value


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    value = data.get(key, default)
    if value is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}{key} must be a {names}, not {value!r}", file=CONFIG_FILE)
    return value


def _path(root: Path, value: str | None) -> Path | None:
    return None if value is None else (root / value)


def _bootstraps(root: Path, data: dict[str, Any], where: str) -> tuple[BootstrapConfig, ...]:
    result = []
    for name, spec in _table(data, "bootstrap", where).items():
        w = f"{where}bootstrap.{name}."
        if not isinstance(spec, dict):
            raise ConfigError(f"[{w[:-1]}] must be a table", file=CONFIG_FILE)
        tool = _get(spec, "tool", str, "mmdebstrap", w)
        if tool != "mmdebstrap":
            raise ConfigError(f"{w}tool = {tool!r} is not supported", file=CONFIG_FILE,
                              hint='use tool = "mmdebstrap" or build the stage with Packer')
        missing = [k for k in ("packages", "configure", "output") if k not in spec]
        if missing:
            raise ConfigError(f"[{w[:-1]}] lacks {', '.join(missing)}", file=CONFIG_FILE)
        output = root / _get(spec, "output", str, None, w)
        result.append(BootstrapConfig(
            name=name, tool=tool,
            suite=_get(spec, "suite", str, "bookworm", w),
            packages=root / _get(spec, "packages", str, None, w),
            configure=root / _get(spec, "configure", str, None, w),
            disk_size=_get(spec, "disk_size", str, "3G", w),
            output=output,
            kernel=root / _get(spec, "kernel", str, str((output.parent / "vmlinuz").relative_to(root)), w),
            initrd=root / _get(spec, "initrd", str, str((output.parent / "initrd.img").relative_to(root)), w),
            mirror=_get(spec, "mirror", str, None, w),
        ))
    return tuple(result)


def load(root: Path, profile: str | None = None) -> ProjectConfig:
    """Read ``root/vault.toml`` (if any) for ``profile`` (default: the file's ``profile``)."""
    path = root / CONFIG_FILE
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", file=path, hint="fix the syntax") from None
    profiles = _table(data, "profiles", "")
    profile = profile or os.environ.get("VAULTDOIT_PROFILE") or _get(data, "profile", str, None, "")
    if profiles and profile is None:
        raise ConfigError("several profiles but no default", file=path, hint='set profile = "<name>"')
    if profile is not None and profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"unknown profile {profile!r} (known: {known})", file=path,
                          hint="pick one of the [profiles.*] tables")
    # Profile settings override top-level ones key by key.
    merged = {k: v for k, v in data.items() if k not in ("profiles", "profile")}
    where = ""
    if profile is not None:
        merged.update(profiles[profile])
        where = f"profiles.{profile}."
    build_dir = root / "build" / profile if profile else root / "build"
    packer_dir = root / _get(merged, "packer_dir", str, f"packer/{profile}" if profile else "packer", where)
    if not packer_dir.is_dir():
        raise ConfigError(f"template folder {packer_dir.relative_to(root)} does not exist", file=path,
                          hint="create it or set packer_dir")
    ansible_cfg = _path(root, _get(merged, "ansible_cfg", str, None, where))
    if ansible_cfg is None and (root / "ansible" / "ansible.cfg").is_file():
        ansible_cfg = root / "ansible" / "ansible.cfg"
    final = _table(merged, "final", where)
    compression = _get(final, "compression", str, "zstd", where + "final.")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"{where}final.compression must be one of {', '.join(COMPRESSIONS)}",
                          file=path, hint='use "zstd" (fast) or "zlib" (readable by QEMU < 5.1)')
    verify = _table(merged, "verify", where)
    requirements = _get(merged, "requirements", str, None, where)
    return ProjectConfig(
        root=root,
        profile=profile,
        image_name=_get(merged, "image_name", str, root.name if profile is None else f"vault-{profile}", where),
        packer_dir=packer_dir,
        build_dir=build_dir,
        var_files=tuple(root / v for v in _get(merged, "var_files", list, [], where)),
        variables=dict(_table(merged, "variables", where)),
        ansible_cfg=ansible_cfg,
        accelerator=_get(merged, "accelerator", str, "auto", where),
        build_user=_get(merged, "build_user", str, "vault", where),
        build_key=root / _get(merged, "build_key", str, "build/keys/build_ed25519", where),
        access_key=root / _get(merged, "access_key", str, "build/keys/access_ed25519", where),
        requirements=_path(root, requirements),
        bootstraps=_bootstraps(root, merged, where),
        final=FinalConfig(
            compression=compression,
            coroutines=_get(final, "coroutines", int, 8, where + "final."),
        ),
        verify=VerifyConfig(
            user=_get(verify, "user", str, "vault", where + "verify."),
            key=_path(root, _get(verify, "key", str, None, where + "verify.")),
            checks=tuple(_get(verify, "checks", list, [], where + "verify.")),
            units=tuple(_get(verify, "units", list, [], where + "verify.")),
            boot_timeout=float(_get(verify, "boot_timeout", (int, float), 600, where + "verify.")),
            memory=_get(verify, "memory", int, 1024, where + "verify."),
        ),
        top=_get(merged, "top", str, None, where),
        apt_proxy=_apt_proxy(_get(merged, "apt_proxy", str, "auto", where), path),
        apt_proxy_port=_port(_get(merged, "apt_proxy_port", int, 3142, where), path),
    )


def _port(value: int, path: Path) -> int:
    # apt-cacher-ng fails to bind ports from 32768 up ("Error resolving address for binding").
    if not 1024 <= value < 32768:
        raise ConfigError(f"apt_proxy_port must be between 1024 and 32767, not {value}", file=path,
                          hint="use the default 3142")
    return value


def _apt_proxy(value: str, path: Path) -> str:
    if value in ("auto", "off") or value.startswith(("http://", "https://")):
        return value
    raise ConfigError(f"apt_proxy must be auto, off or an http:// URL, not {value!r}", file=path,
                      hint='use apt_proxy = "auto"')
