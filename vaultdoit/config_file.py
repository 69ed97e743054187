"""Reading vault.toml: every value checked against ``settings.SETTINGS`` into a ProjectConfig.

What each key may hold is described once, in ``settings.SETTINGS``. Every
value is checked when the project loads, so a mistake is one line (file:line,
problem, fix) before any work starts.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultdoit.config import (CONFIG_FILE, BootstrapConfig, FinalConfig, ProjectConfig, StageConfig, VariantConfig,
                              VerifyConfig, confine)
from vaultdoit.errors import ConfigError
from vaultdoit.settings import (
    ACCESS_KEY_ENV,
    ALLOWED_PATHS_ENV,
    BUILD_KEY_ENV,
    BOOTSTRAP,
    FILE,
    FINAL,
    INPUT,
    INPUT_DIR,
    OUTPUT,
    PLACES,
    PROFILE_ENV,
    PROJECT,
    SIGNING_KEY_ENV,
    REMOTE_CACHE_ENV,
    REMOTE_PUSH_ENV,
    VARIABLE,
    SCOPE_KEYS,
    SETTINGS,
    STAGE,
    VARIANT,
    VERIFY,
    Setting,
    lookup,
    size_bytes,
)
from vaultdoit.settings import toml_text as _toml

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# --- reading vault.toml ----------------------------------------------------------------------------------------

Key = tuple[str, ...]


@dataclass(frozen=True)
class _Value:
    value: Any
    written: Key  # the key as written in the file, e.g. ("profiles", "mini", "final", "compression")
    setting: Setting | None = None  # None: a named table itself, or a Packer variable


def _dotted(key: Key) -> str:
    return ".".join(k if BARE_KEY.fullmatch(k) else json.dumps(k, ensure_ascii=False) for k in key)


def _where(table: Key) -> str:
    return f"in [{_dotted(table)}]" if table else "at the top level"


class _File:
    """vault.toml's path and where each key is written in it, to place errors on their line."""

    def __init__(self, path: Path, text: str = "") -> None:
        self.path = path
        self.text = text

    @functools.cached_property
    def lines(self) -> dict[Key, int]:
        return _key_lines(self.text)  # only when a message needs a line

    def at(self, key: Key | None) -> str:
        while key:
            if key in self.lines:
                return f"{self.path}:{self.lines[key]}"
            key = key[:-1]
        return str(self.path)

    def error(self, key: Key | None, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.at(key), hint=hint)


def _parse(path: Path) -> tuple[_File, dict[str, Any]]:
    """The file's tables, or one line saying why it cannot be read (with its line number)."""
    if not (path.exists() or path.is_symlink()):
        return _File(path), {}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", file=path,
                          hint="make it a readable file (or remove it: every setting is optional)") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column})",
                          file=f"{path}:{line}", hint="save the file as UTF-8") from None
    import tomllib  # only when the plan is made (see plancache)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        where: str | Path = path
        if found:
            message = f"{message[:found.start()]} (column {found.group(2)})"
            where = f"{path}:{found.group(1)}"
        elif message.endswith("(at end of document)"):
            message = message.removesuffix(" (at end of document)") + " at the end of the file"
            where = f"{path}:{text.count(chr(10)) + (0 if text.endswith(chr(10)) else 1)}"
        raise ConfigError(f"invalid TOML: {message[:1].lower()}{message[1:]}", file=where,
                          hint="correct the syntax on that line") from None
    return _File(path, text), data


def _suggest(name: str, scope: str) -> str:
    import difflib

    known = list(SCOPE_KEYS[scope]) + (list(SCOPE_KEYS[PROJECT]) if scope == FILE else [])
    elsewhere = [s.scope for s in SETTINGS if s.name == name and s.scope != scope
                 and not (scope == FILE and s.scope == PROJECT)]
    if elsewhere:
        return f'"{name}" goes {PLACES[elsewhere[0]]}'
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f'did you mean "{close[0]}"?'
    if len(known) <= 10:
        return "known here: " + ", ".join(sorted(known))
    return "see docs/configuration.md for the settings"


def _read(f: _File, table: dict[str, Any], scope: str, written: Key, logical: Key,
          out: dict[Key, _Value]) -> None:
    """Check every key of one table and record its value under its profile-independent key."""
    keys = dict(SCOPE_KEYS[scope])
    if scope == FILE:
        keys.update(SCOPE_KEYS[PROJECT])
    for name, value in table.items():
        key = written + (name,)
        entry = keys.get(name)
        if entry is None or (scope == FILE and name == "profiles"):
            if entry is None:
                raise f.error(key, f'unknown setting "{name}" {_where(written)}', hint=_suggest(name, scope))
            continue  # profiles are read apart: see _read_file
        if not entry.kind.accepts(value):
            raise f.error(key, f"{_dotted(key)} must be {entry.kind.label}, not {_toml(value)}", hint=_example(entry))
        if entry.kind.shape == "table":
            assert entry.table is not None
            _read(f, value, entry.table, key, logical + (name,), out)
        elif entry.kind.shape == "tables":
            assert entry.table is not None
            for sub, body in value.items():
                if not isinstance(body, dict):
                    raise f.error(key + (sub,), f"{_dotted(key + (sub,))} must be a table, not {_toml(body)}",
                                  hint=f"write it as [{_dotted(key + (sub,))}] with its settings below")
                out[logical + (name, sub)] = _Value(None, key + (sub,))  # the table itself, even when empty
                _read(f, body, entry.table, key + (sub,), logical + (name, sub), out)
        elif entry.kind.shape == "free":
            for var, body in value.items():
                _check_variable(f, key + (var,), var, body)
                out[logical + (name, var)] = _Value(body, key + (var,))
        else:
            if entry.check is not None and not entry.check.ok(value):
                raise f.error(key, f"{_dotted(key)} must be {entry.check.must}, not {_toml(value)}",
                              hint=entry.hint or _example(entry))
            out[logical + (name,)] = _Value(entry.kind.convert(value), key, entry)


def _example(entry: Setting) -> str:
    """The fix for a value of the wrong type: how a valid one is written."""
    if entry.kind.shape in ("table", "free"):
        return f"write it as [{entry.name}] with its settings below"
    if entry.kind.shape == "tables":
        return f"write it as [{entry.name}.<name>] with its settings below"
    if entry.example:
        return f"write e.g. {entry.example}"
    default = int(entry.default) if isinstance(entry.default, float) and entry.default.is_integer() else entry.default
    return f"write e.g. {entry.name} = {_toml(default)}"


def _plain(value: Any) -> bool:
    """A value Packer's -var can take: strings, numbers, booleans, and lists and tables of them."""
    if isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return False


def _check_variable(f: _File, key: Key, name: str, value: Any) -> None:
    if not VARIABLE.fullmatch(name):
        raise f.error(key, f'"{name}" in [{_dotted(key[:-1])}] is not a Packer variable name',
                      hint="use letters, digits, _ and -, starting with a letter")
    if not _plain(value):
        raise f.error(key, f"{_dotted(key)} must be a string, number, boolean, list or table, not {_toml(value)}",
                      hint="write the value as Packer's -var takes it, e.g. a quoted string")


def _read_file(f: _File, data: dict[str, Any]) -> tuple[dict[Key, _Value], dict[str, dict[Key, _Value]]]:
    """Every value of the file checked: (top-level values, each profile's own values)."""
    top: dict[Key, _Value] = {}
    _read(f, data, FILE, (), (), top)
    profiles: dict[str, dict[Key, _Value]] = {}
    raw = data.get("profiles", {})
    if not isinstance(raw, dict):
        raise f.error(("profiles",), f"profiles must be a table of tables, not {_toml(raw)}",
                      hint="write each profile as [profiles.<name>]")
    for name, body in raw.items():
        if not PROFILE_NAME.fullmatch(name):
            # The name becomes a folder: build/<profile>/.
            raise f.error(("profiles", name), f"profile name {_toml(name)} is not a plain name",
                          hint="use letters, digits, ., _ and -, starting with a letter or digit")
        if not isinstance(body, dict):
            raise f.error(("profiles", name), f"{_dotted(('profiles', name))} must be a table, not {_toml(body)}",
                          hint=f"write it as [{_dotted(('profiles', name))}] with its settings below")
        profiles[name] = {}
        _read(f, body, PROJECT, ("profiles", name), (), profiles[name])
    return top, profiles


def _key_lines(text: str) -> dict[Key, int]:
    """The line of the first place each key (and each table) is written: a best effort for messages."""
    lines: dict[Key, int] = {}
    table: Key = ()
    in_string = False
    for number, line in enumerate(text.splitlines(), 1):
        quotes = line.count('"""') + line.count("'''")
        if in_string:
            in_string = quotes % 2 == 0
            continue
        stripped = line.strip()
        if stripped.startswith("["):
            parsed = _key_path(stripped.lstrip("["))
            if parsed and parsed[1].lstrip().startswith("]"):
                table = parsed[0]
                for i in range(1, len(table) + 1):
                    lines.setdefault(table[:i], number)
            continue
        parsed = _key_path(stripped)
        if parsed and parsed[1].lstrip().startswith("="):
            full = table + parsed[0]
            for i in range(len(table) + 1, len(full) + 1):
                lines.setdefault(full[:i], number)
        in_string = quotes % 2 == 1
    return lines


def _key_path(text: str) -> tuple[Key, str] | None:
    """A dotted TOML key at the start of ``text``: (its parts, the rest of the text)."""
    parts: list[str] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] in "\"'":
            quote = text[i]
            end = i + 1
            while end < len(text) and text[end] != quote:
                end += 2 if quote == '"' and text[end] == "\\" else 1
            if end >= len(text):
                return None
            raw = text[i:end + 1]
            try:
                parts.append(json.loads(raw) if quote == '"' else raw[1:-1])
            except ValueError:
                parts.append(raw[1:-1])
            i = end + 1
        else:
            found = BARE_KEY.match(text, i)
            if not found:
                return None
            parts.append(found.group())
            i = found.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        return tuple(parts), text[i:]


# --- resolving one profile -------------------------------------------------------------------------------------


class _Resolver:
    """One profile's values (its own over the top level's) turned into checked paths and settings."""

    def __init__(self, f: _File, root: Path, values: dict[Key, _Value]) -> None:
        self.f, self.root, self.values = f, root, values
        self.allowed: tuple[Path, ...] = ()
        self.paths: dict[Key, Path] = {}  # every path setting that has a value, checked

    def get(self, key: Key, scope: str) -> Any:
        found = self.values.get(key)
        return lookup(scope, key[-1]).default if found is None else found.value

    def written(self, key: Key) -> Key:
        found = self.values.get(key)
        return found.written if found else key

    def names(self, table: str) -> list[str]:
        """The named sub-tables of ``[table.<name>]`` (bootstrap, stages), in file order."""
        return [k[1] for k in self.values if len(k) == 2 and k[0] == table]

    def check_paths(self) -> None:
        """Every path setting of the table, set or by default: outputs confined, then inputs present."""
        found = [(k, v.value, v.setting) for k, v in self.values.items() if v.setting and v.setting.path]
        found += [((s.name,), s.default, s) for s in SCOPE_KEYS[PROJECT].values()
                  if s.path and s.default and (s.name,) not in self.values]
        for key, value, entry in sorted(found, key=lambda item: item[2].path != OUTPUT):
            if entry.path == OUTPUT:
                self.paths[key] = self.output(key, value)
            elif entry.path in (INPUT, INPUT_DIR) and isinstance(value, str):
                self.paths[key] = self.input(key, value, folder=entry.path == INPUT_DIR)
            elif entry.path == INPUT:
                for item in value:  # a list of files (var_files)
                    self.input(key, item, listed=True)

    def input(self, key: Key, value: str, *, folder: bool = False, listed: bool = False) -> Path:
        """A path only read: anywhere, but it must exist (unless vaultdoit makes it: verify.key)."""
        path = self.root / value
        if Path(os.path.normpath(path)) in self.paths.values() or (path.is_dir() if folder else path.is_file()):
            return path
        what = "folder" if folder else "file"
        written = self.written(key)
        if listed:
            raise self.f.error(written, f"{_dotted(written)}: {_toml(value)} does not exist",
                               hint=f"create the {what} or remove it from the list")
        problem = f"is not a {what}" if path.exists() else "does not exist"
        raise self.f.error(written, f"{_dotted(written)} = {_toml(value)} {problem}",
                           hint=f"create the {what} or fix the path")

    def output(self, key: Key, value: str) -> Path:
        """A path vaultdoit writes: inside the project or an allowed folder."""
        written = self.written(key)
        try:
            return confine(Path(value), self.root, self.allowed, _dotted(written), value=value)
        except ConfigError as err:
            err.file = self.f.at(written)  # found only now: the line map is built for errors alone
            raise


def _allowed(r: _Resolver) -> tuple[Path, ...]:
    folders = [Path(os.path.realpath(r.root / p)) for p in r.get(("allowed_paths",), PROJECT)]
    for part in os.environ.get(ALLOWED_PATHS_ENV, "").split(":"):
        if not part:
            continue
        if not os.path.isabs(part):
            raise ConfigError(f"{ALLOWED_PATHS_ENV}: {part!r} is not an absolute path",
                              hint="list absolute folders separated by ':'")
        folders.append(Path(os.path.realpath(part)))
    return tuple(dict.fromkeys(folders))


def _remote_cache(r: _Resolver) -> str | None:
    """``remote_cache``: the environment's value (``off``: none) over the file's."""
    value = os.environ.get(REMOTE_CACHE_ENV, "").strip()
    if not value:
        return r.get(("remote_cache",), PROJECT) or None
    if value == "off":
        return None
    entry = lookup(PROJECT, "remote_cache")
    assert entry.check is not None
    if not entry.check.ok(value):
        raise ConfigError(f"{REMOTE_CACHE_ENV}={value!r} is not {entry.check.must}",
                          hint=f"set {REMOTE_CACHE_ENV} to <registry>/<repository>, or off")
    return value


def _remote_push(r: _Resolver) -> bool:
    """``remote_push``: ``VAULTDOIT_REMOTE_PUSH`` (per machine) over the file's value."""
    value = os.environ.get(REMOTE_PUSH_ENV, "").strip().lower()
    if not value:
        return bool(r.get(("remote_push",), PROJECT))
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{REMOTE_PUSH_ENV}={value!r} is neither on nor off", hint=f"set {REMOTE_PUSH_ENV}=0 or 1")


def _key_from(variable: str) -> Path | None:
    """A team's shared SSH key named by the environment: an existing private key file."""
    value = os.environ.get(variable, "")
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        raise ConfigError(f"{variable}={value!r} is not an absolute path",
                          hint=f"set {variable} to the absolute path of the private key file")
    if not path.is_file():
        raise ConfigError(f"{variable}={value!r} is not a file",
                          hint=f"write the key there first (e.g. from a CI secret) or unset {variable}")
    return path


def _choose_profile(f: _File, top: dict[Key, _Value], profiles: dict[str, Any], profile: str | None) -> str | None:
    import difflib

    origin: Key | None = None
    source = ""
    if profile is None and os.environ.get(PROFILE_ENV):
        profile, source = os.environ[PROFILE_ENV], f" (from {PROFILE_ENV})"
    if profile is None and ("profile",) in top:
        profile, origin = top[("profile",)].value, ("profile",)
    if profile is None:
        if profiles:
            raise f.error(("profiles",), "[profiles.*] tables but no profile chosen",
                          hint=f'set profile = "{next(iter(profiles))}" at the top level or pass profile=NAME')
        return None
    if profile not in profiles:
        close = difflib.get_close_matches(profile, list(profiles), n=1)
        hint = (f'did you mean "{close[0]}"?' if close else
                "pick one of: " + ", ".join(profiles) if profiles else "add a [profiles.<name>] table")
        raise f.error(origin, f"unknown profile {_toml(profile)}{source}", hint=hint)
    return profile


def load(root: Path, profile: str | None = None) -> ProjectConfig:
    """Read and check ``root/vault.toml`` (if any) for ``profile`` (default: the file's ``profile``)."""
    f, data = _parse(root / CONFIG_FILE)
    top, profiles = _read_file(f, data)
    profile = _choose_profile(f, top, profiles, profile)
    # A profile overrides the top level key by key, inside sub-tables too.
    values = dict(top)
    if profile is not None:
        values.update(profiles[profile])
    r = _Resolver(f, root, values)
    r.allowed = _allowed(r)
    for folder in ("build", "cache"):
        # Everything vaultdoit writes is under these two: a symlink out of the project moves all of it.
        confine(root / folder, root, r.allowed, f"{folder}/", file=f.path, holder=True)
    r.check_paths()
    image_name = r.get(("image_name",), PROJECT) or (root.name if profile is None else f"vault-{profile}")
    ansible_cfg = r.paths.get(("ansible_cfg",))
    if ansible_cfg is None and (root / "ansible" / "ansible.cfg").is_file():
        ansible_cfg = root / "ansible" / "ansible.cfg"
    build_key, access_key = _keys(r)
    cfg = ProjectConfig(
        root=root,
        profile=profile,
        image_name=image_name,
        packer_dir=r.paths.get(("packer_dir",)) or _default_packer_dir(r, profile),
        build_dir=root / "build" / profile if profile else root / "build",
        var_files=tuple(root / v for v in r.get(("var_files",), PROJECT)),
        variables={k[1]: v.value for k, v in values.items() if k[0] == "variables"},
        ansible_cfg=ansible_cfg,
        accelerator=r.get(("accelerator",), PROJECT),
        build_user=r.get(("build_user",), PROJECT),
        build_key=build_key,
        access_key=access_key,
        requirements=r.paths.get(("requirements",)),
        bootstraps=tuple(_bootstrap(r, name) for name in r.names("bootstrap")),
        final=FinalConfig(
            compression=r.get(("final", "compression"), FINAL),
            coroutines=r.get(("final", "coroutines"), FINAL),
        ),
        verify=VerifyConfig(
            user=r.get(("verify", "user"), VERIFY),
            key=r.paths.get(("verify", "key")),
            checks=r.get(("verify", "checks"), VERIFY),
            units=r.get(("verify", "units"), VERIFY),
            boot_timeout=r.get(("verify", "boot_timeout"), VERIFY),
            memory=r.get(("verify", "memory"), VERIFY),
        ),
        top=r.get(("top",), PROJECT),
        apt_proxy=r.get(("apt_proxy",), PROJECT),
        apt_proxy_port=r.get(("apt_proxy_port",), PROJECT),
        allowed_paths=r.allowed,
        stall_timeout=r.get(("stall_timeout",), PROJECT),
        keep_failed=r.get(("keep_failed",), PROJECT),
        stage_configs=tuple(
            StageConfig(name, stall_timeout=r.get(("stages", name, "stall_timeout"), STAGE),
                        memory=r.get(("stages", name, "memory"), STAGE), cpus=r.get(("stages", name, "cpus"), STAGE),
                        origin=f.at(r.written(("stages", name))))
            for name in r.names("stages")),
        signing_key=(signing_key := _signing_key(r)),
        signer=_signer(signing_key),
        variants=tuple(_variant(r, name) for name in r.names("variants")),
        variant=r.get(("variant",), PROJECT),
        memory=r.get(("memory",), PROJECT),
        cpus=r.get(("cpus",), PROJECT),
        remote_cache=_remote_cache(r),
        remote_push=_remote_push(r),
        remote_chunk_size=size_bytes(r.get(("remote_chunk_size",), PROJECT)),
        build_key_from=_key_from(BUILD_KEY_ENV),
        access_key_from=_key_from(ACCESS_KEY_ENV),
    )
    if cfg.variant != "all":
        from vaultdoit.variants import choose

        choose([v.name for v in cfg.variants], cfg.variant, file=f.at(r.written(("variant",))))
    try:
        # The final image is build/final/<image_name>.qcow2: build/final itself may be a symlink.
        confine(cfg.final_image, root, r.allowed, "image_name", value=image_name)
    except ConfigError as err:
        err.file = f.at(r.written(("image_name",)))
        raise
    return cfg


def _variant(r: _Resolver, name: str) -> VariantConfig:
    key: Key = ("variants", name)
    if not PROFILE_NAME.fullmatch(name) or name == "all":
        # The name becomes a folder (build/logs/<profile>/<variant>) and part of task names.
        raise r.f.error(r.written(key), f"variant name {_toml(name)} is not a plain name",
                        hint="use letters, digits, ., _ and -, starting with a letter or digit (not \"all\")")
    return VariantConfig(
        name=name,
        variables={k[3]: v.value for k, v in r.values.items() if k[:3] == (*key, "variables") and len(k) == 4},
        var_files=tuple(r.root / p for p in r.get((*key, "var_files"), VARIANT)),
    )


def _default_packer_dir(r: _Resolver, profile: str | None) -> Path:
    path = r.root / ("packer/" + profile if profile else "packer")
    if not path.is_dir():
        raise ConfigError(f"template folder {path.relative_to(r.root)} does not exist", file=r.f.path,
                          hint="create it or set packer_dir")
    return path


def _keys(r: _Resolver) -> tuple[Path, Path]:
    """The SSH keys the keys task creates: in a folder of their own, never someone else's key."""
    paths = []
    for name in ("build_key", "access_key"):
        key = r.paths[(name,)]
        shown = f"{_dotted(r.written((name,)))} = {_toml(r.get((name,), PROJECT))}"
        where = r.written((name,))
        if os.path.realpath(key.parent) in (os.path.realpath(r.root), *map(str, r.allowed)):
            # The keys task makes a key's folder private (mode 700).
            raise r.f.error(where, f"{shown} would make {key.parent} private",
                            hint="put the key in a folder of its own, e.g. build/keys/")
        pub = key.with_name(key.name + ".pub")
        if key.exists() and not pub.exists():
            raise r.f.error(where, f"{shown} exists without {pub.name}; the keys task would replace it",
                            hint="name a new file, or put its public key beside it")
        paths.append(key)
    if paths[0] == paths[1]:
        raise r.f.error(r.written(("access_key",)), "access_key must differ from build_key",
                        hint="the build key is removed from the image; the access key stays")
    return paths[0], paths[1]


def _signing_key(r: _Resolver) -> Path | None:
    """The user's signing key: VAULTDOIT_SIGNING_KEY, else ``signing_key``; it must exist (never made here)."""
    value = os.environ.get(SIGNING_KEY_ENV) or r.get(("signing_key",), PROJECT)
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    path = path if path.is_absolute() else r.root / path
    if path.is_file():
        return Path(os.path.normpath(path))
    problem = "is not a file" if path.exists() else "does not exist"
    fix = "name an existing SSH key (create one with ssh-keygen -t ed25519 -f FILE; vaultdoit never makes one)"
    if os.environ.get(SIGNING_KEY_ENV):
        raise ConfigError(f"{SIGNING_KEY_ENV}={_toml(value)} {problem}", hint=fix)
    written = r.written(("signing_key",))
    raise r.f.error(written, f"{_dotted(written)} = {_toml(value)} {problem}", hint=fix)


def _signer(key: Path | None) -> str | None:
    if key is None:
        return None
    pub = key if key.name.endswith(".pub") else key.with_name(key.name + ".pub")
    try:
        return " ".join(pub.read_text().split()[:2]) or str(key)
    except OSError:
        return str(key)


def _bootstrap(r: _Resolver, name: str) -> BootstrapConfig:
    base: Key = ("bootstrap", name)
    missing = [s.name for s in SCOPE_KEYS[BOOTSTRAP].values() if s.required and base + (s.name,) not in r.values]
    if missing:
        table = r.written(base)
        raise r.f.error(table, f"[{_dotted(table)}] lacks {', '.join(missing)}",
                        hint="set " + ", ".join(f"{m} = ..." for m in missing) + " (see docs/configuration.md)")
    output = r.paths[base + ("output",)]
    # The boot files go beside the image unless set (then checked with the other paths).
    kernel = r.paths.get(base + ("kernel",)) or r.output(base + ("kernel",), str(output.parent / "vmlinuz"))
    initrd = r.paths.get(base + ("initrd",)) or r.output(base + ("initrd",), str(output.parent / "initrd.img"))
    return BootstrapConfig(
        name=name,
        tool=r.get(base + ("tool",), BOOTSTRAP),
        suite=r.get(base + ("suite",), BOOTSTRAP),
        packages=r.paths[base + ("packages",)],
        configure=r.paths[base + ("configure",)],
        disk_size=r.get(base + ("disk_size",), BOOTSTRAP),
        output=output,
        kernel=kernel,
        initrd=initrd,
        mirror=r.get(base + ("mirror",), BOOTSTRAP),
    )


def check_stage_names(cfg: ProjectConfig, stages: Iterable[str]) -> None:
    """Refuse ``[stages.<name>]`` tables that name no stage (the planner knows the stages)."""
    import difflib

    known = list(stages)
    for own in cfg.stage_configs:
        if own.name not in known:
            close = difflib.get_close_matches(own.name, known, n=1)
            raise ConfigError(f"[stages.{own.name}] names no stage", file=own.origin,
                              hint=f'did you mean "{close[0]}"?' if close else "pick one of: " + ", ".join(known))


def find_root(start: Path) -> Path:
    """The project root: the nearest folder upwards with vault.toml or dodo.py and packer/."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file() or ((folder / "dodo.py").is_file() and (folder / "packer").is_dir()):
            return folder
    raise ConfigError("not inside a vaultdoit project (no vault.toml or dodo.py with packer/)",
                      file=start, hint="run from the project root or create one with `vaultdoit init`")

