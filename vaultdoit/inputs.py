"""Every local file a Packer stage reads: its source attributes and its provisioners.

Packer resolves relative paths against its working directory (the project
root here). A file or a folder that exists becomes an input (a folder counts
every regular file in it); a value that cannot be resolved widens to the
folder its literal part names, with one warning; a missing file is a problem
of building that stage, not of loading the project, so `doit list` keeps
working. Only stat and listing calls happen here.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultdoit.errors import GraphError
from vaultdoit.model import PackerSource, Provisioner, Unknown

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")

# Source attributes that name local files or folders the build reads.
SOURCE_FILES = ("floppy_files", "cd_files", "efi_firmware_code", "efi_firmware_vars", "firmware",
                "bios", "pflash")
SOURCE_FOLDERS = ("http_directory", "floppy_dirs")
# qemuargs options whose value is a host file, and -option key=value,... keys that name one.
QEMU_FILE_OPTIONS = frozenset({"-kernel", "-initrd", "-dtb", "-bios", "-pflash", "-hda", "-hdb", "-hdc",
                               "-hdd", "-fda", "-fdb", "-cdrom", "-mtdblock", "-sd"})
QEMU_FILE_KEYS = ("file", "romfile")

# Provisioner settings that name local files (scripts) or files-or-folders (uploads).
SCRIPT_KEYS = ("script", "scripts")
ANSIBLE_FILE_KEYS = ("galaxy_file", "inventory_file")
ANSIBLE_FOLDER_KEYS = ("playbook_dir", "role_paths", "group_vars", "host_vars", "inventory_directory")
SHELL_TYPES = frozenset({"shell", "shell-local", "powershell", "windows-shell"})
ANSIBLE_TYPES = frozenset({"ansible", "ansible-local"})
# Provisioners that never read local files.
NO_FILES = frozenset({"breakpoint", "windows-restart", "sleep"})


@dataclass
class Found:
    """What a stage reads, and what was said about it."""

    files: set[Path] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # missing inputs: errors of building the stage


def norm(path: str | Path) -> Path:
    return Path(os.path.normpath(path))


def inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def tree(folder: Path, *, recursive: bool = True, skip: Callable[[str], bool] | None = None) -> list[Path]:
    """Every regular file under ``folder`` (symlinks followed; a link loop is an error).

    ``recursive=False`` lists only the files directly in it; names for which ``skip``
    is true (files or folders) are left out. Two links to one folder: it is read once.
    """
    found: list[Path] = []
    top = os.stat(folder)
    seen = {(top.st_dev, top.st_ino)}
    # Each folder to read with the identities of the folders above it (a link to one is a loop).
    stack: list[tuple[str, frozenset[tuple[int, int]], int]] = [
        (os.fspath(folder), frozenset(seen), top.st_dev)]
    while stack:
        dirpath, above, device = stack.pop()
        try:
            entries = list(os.scandir(dirpath))
        except OSError:
            continue  # unreadable: nothing Ansible or Packer could read either
        for entry in entries:
            if skip is not None and skip(entry.name):
                continue
            link = entry.is_symlink()
            try:  # both follow links; without one the type comes from readdir, no stat needed
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if not recursive:
                    continue
                if link:
                    info = os.stat(entry.path)
                    ident = (info.st_dev, info.st_ino)
                    # Back to a folder this walk came through, or above this one on disk.
                    if ident in above or inside(Path(os.path.realpath(dirpath)),
                                                Path(os.path.realpath(entry.path))):
                        raise GraphError("symlink loop: this folder leads back into itself", file=entry.path,
                                         hint="remove the link or point it elsewhere")
                else:
                    ident = (device, entry.inode())
                if ident not in seen:
                    seen.add(ident)
                    stack.append((entry.path, above | {ident}, ident[0]))
            elif is_file:
                found.append(Path(entry.path))
            elif link:
                _check_link(Path(entry.path))
    return sorted(found)


def _check_link(path: Path) -> None:
    """A dangling or looping symlink: a loop is an error, a dangling one a missing file."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise GraphError("symlink loop", file=path, hint="remove the link or point it elsewhere") from None


class Collector:
    """Collects the inputs of one stage from its resolved template values."""

    def __init__(self, root: Path, what: str, generated: frozenset[Path] = frozenset()) -> None:
        self.root = root
        self.what = what  # e.g. 'stage "drivers"', for messages
        self.generated = generated  # files a task of the build makes (the SSH keys): never missing
        self.found = Found()

    def _warn(self, where: str, text: str) -> None:
        self.found.warnings.append(f"{where or self.what}: {text}")

    def _path(self, text: str) -> Path:
        return norm(self.root / os.path.expanduser(text))

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root) if inside(path, self.root) else str(path)

    def add(self, value: Any, setting: str, where: str, *, folder_ok: bool = True, must_exist: bool = True,
            skip: Iterable[Path] = ()) -> None:
        """A setting's value (a path, a list of paths, a glob or Unknown) as inputs."""
        for item in _flatten(value):
            if isinstance(item, Unknown):
                self.unknown(item, setting)
                continue
            text = str(item)
            if not text or URL.match(text) or "{{" in text:
                continue  # remote, or a Packer build-time template (filled in by Packer)
            if any(ch in text for ch in "*?["):
                self._glob(text, setting, where)
                continue
            path = self._path(text)
            if path in skip:
                continue
            if path.is_dir() and folder_ok:
                self.found.files.update(tree(path))
            elif path.is_file():
                self.found.files.add(path)
            elif os.path.islink(path):
                _check_link(path)
                self._missing(path, setting)
            elif must_exist:
                self._missing(path, setting)

    def _glob(self, pattern: str, setting: str, where: str) -> None:
        hits = sorted(Path(p) for p in glob.glob(str(self._path(pattern)), recursive=True))
        for hit in hits:
            self.found.files.update(tree(hit) if hit.is_dir() else [hit])
        if not hits:
            self._warn(where, f"{setting} = {pattern!r} matches no file")

    def _missing(self, path: Path, setting: str) -> None:
        if path in self.generated:
            self.found.files.add(path)
            return
        self.found.problems.append(f"{self.what}: {setting} names {self._rel(path)}, which does not exist")
        self.found.files.add(path)  # listed as missing by doit list/info/status

    def unknown(self, value: Unknown, setting: str) -> None:
        """A path that cannot be computed: depend on the folder its literal part names."""
        reason = f"{setting} = {value.text} cannot be resolved before the build ({value.reason})"
        prefix = value.prefix
        folder = self._path(prefix if prefix.endswith("/") else os.path.dirname(prefix)) if "/" in prefix else None
        if folder is None or folder == self.root or not folder.is_dir():
            self._warn(value.where, f"{reason}; it counts by its text only")
        elif not inside(folder, self.root):
            self._warn(value.where, f"{reason}; {folder} is outside the project and counts by its text only")
        else:
            self.found.files.update(tree(folder))
            self._warn(value.where, f"{reason}; depending on every file in {self._rel(folder)}/")

    # -- source attributes

    def source(self, source: PackerSource) -> None:
        attrs = source.attrs
        for key in SOURCE_FILES:
            if key in attrs:
                self.add(attrs[key], key, source.where)
        for key in SOURCE_FOLDERS:
            if key in attrs:
                self.add(attrs[key], key, source.where)
        for path in sorted(source.reads):
            if path.exists():
                self.found.files.add(path)
            else:  # a file function's file that is not there (yet)
                self._missing(path, "a file function")

    def qemuargs(self, source: PackerSource, produced: frozenset[Path]) -> None:
        """Host files named in qemuargs: -kernel/-initrd/..., file= of -drive and friends."""
        for row in source.attrs.get("qemuargs") or []:
            row = row if isinstance(row, list) else [row]
            for index, value in enumerate(row):
                if isinstance(value, Unknown):
                    self.unknown(value, "qemuargs")
                    continue
                text = str(value)
                previous = str(row[index - 1]) if index else ""
                for candidate in _qemu_paths(previous, text):
                    path = self._path(candidate)
                    if path in produced or path.is_file():
                        self.found.files.add(path)
                    elif previous in QEMU_FILE_OPTIONS or "=" in text:
                        self._missing(path, "qemuargs")

    # -- provisioners

    def provisioner(self, prov: Provisioner, index: int) -> None:
        settings = prov.settings
        setting = f"provisioner {index + 1} ({prov.type})"
        where = prov.where
        if prov.type in NO_FILES:
            return
        if prov.type in SHELL_TYPES:
            for key in SCRIPT_KEYS:
                if key in settings:
                    self.add(settings[key], f"{setting} {key}", where, folder_ok=False)
            return
        if prov.type == "file":
            if str(settings.get("direction", "upload")) == "download" or settings.get("generated") is True:
                return
            for key in ("source", "sources"):
                if key in settings:
                    self.add(settings[key], f"{setting} {key}", where)
            return
        if prov.type in ANSIBLE_TYPES:
            for key in ANSIBLE_FILE_KEYS:
                if key in settings:
                    self.add(settings[key], f"{setting} {key}", where, folder_ok=False)
            for key in ANSIBLE_FOLDER_KEYS:
                if key in settings:
                    self.add(settings[key], f"{setting} {key}", where)
            if prov.type == "ansible-local" and "playbook_files" in settings:
                self.add(settings["playbook_files"], f"{setting} playbook_files", where, folder_ok=False)
            for arg in at_files(prov.extra_arguments):
                self.add(arg, f"{setting} extra_arguments", where, folder_ok=False)
            return
        # Any other provisioner: every setting that names an existing file or folder counts.
        for key, value in sorted(settings.items()):
            for item in _flatten(value):
                if isinstance(item, str) and item and not URL.match(item) and "\n" not in item \
                        and len(item) < 4096 and self._path(item).exists():
                    self.add(item, f"{setting} {key}", where)


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _flatten(item)
    elif value is not None and not isinstance(value, (dict, bool, int, float)):
        yield value


def _qemu_paths(previous: str, text: str) -> list[str]:
    """Host paths in one qemuargs element, given the option before it."""
    if text.startswith("-") or URL.match(text) or "{{" in text:
        return []
    if previous in QEMU_FILE_OPTIONS:
        return [text]
    found = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and key in QEMU_FILE_KEYS and value and not value.startswith(("/dev/", "fd:")):
            found.append(value)
    if not found and "=" not in text and ":" not in text:
        found.append(text)  # a bare path after an option we do not know: counted if it exists
    return found


def extra_var_files(args: Iterable[str]) -> list[str]:
    """Files passed to Ansible as ``-e @file`` / ``--extra-vars=@file``."""
    words = [w for arg in args for w in str(arg).split()]
    return [w[1:] if w.startswith("@") else w.split("=@", 1)[1] for w in words
            if (w.startswith("@") and len(w) > 1) or (w.startswith("--extra-vars=@") and len(w) > 14)]


def at_files(args: Iterable[str]) -> list[str]:
    """Files passed to Ansible as ``-e @file``/``--extra-vars=@file``, ``-i file`` and friends."""
    found: list[str] = []
    words = [w for arg in args for w in str(arg).split()]
    for index, word in enumerate(words):
        previous = words[index - 1] if index else ""
        if word.startswith("@"):
            found.append(word[1:])
        elif "=@" in word and word.startswith("--extra-vars"):
            found.append(word.split("=@", 1)[1])
        elif previous in ("-i", "--inventory", "--inventory-file", "--vault-password-file",
                          "--vault-pass-file") and not word.startswith("-"):
            found.append(word)
        elif word.startswith(("--inventory=", "--vault-password-file=", "--vault-pass-file=")):
            found.append(word.split("=", 1)[1])
    return [f for f in found if f and "," not in f]
