"""Static file closure of an Ansible playbook.

Every controller-side file a playbook can read (task files, roles, templates, variable
files, plugins, collections, inventories, ansible.cfg) is a dependency of the image the
playbook provisions. Paths are resolved in the order ansible-core uses; a path that
needs run-time values (Jinja) widens to the folder that can hold it, with one warning
naming file:line.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from vaultdoit import inputs
from vaultdoit.ansible_paths import COLLECTION_FILES, PLUGIN_FOLDERS, SYNTHETIC, AnsibleSettings, Collections
from vaultdoit.ansible_syntax import (BLOCK_KEYS, CONDITIONS, EXTRA, JINJA_FQCN, LOOKUP, LOOP_LOOKUPS, MAGIC,
                                      QUOTED, ROLE_INCLUDES, SRC_FOLDER, TASK_INCLUDES, first_argument, has_jinja,
                                      literal_folder, pick, remote_source, role_name, script_path, split_fqcr,
                                      str_list, strings, task_action, task_modules)
from vaultdoit.errors import PlaybookError
from vaultdoit.model import PlaybookClosure
from vaultdoit.yamlio import AnsibleLoader, line_of, load_yaml

__all__ = ["AnsibleLoader", "load_yaml", "playbook_closure"]  # the YAML reader lives in yamlio

# --------------------------------------------------------------------------- paths

_SKIPPED_NAMES = ("__pycache__",)
_SKIPPED_SUFFIXES = (".pyc", ".retry")
_LINK_HINT = "remove the link or point it elsewhere"


def _norm(path: str | Path) -> Path:
    """Absolute and normalised, without resolving symlinks (keep the user's paths)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def _join(base: str | Path, *parts: str) -> str:
    """An absolute, normalised path as text: candidates are many, Path objects cost more."""
    return os.path.normpath(os.path.join(base, *parts))


def _unique(paths: Iterable[Path]) -> list[Path]:
    """Paths in first-seen order without repeats."""
    return list(dict.fromkeys(paths))


def _skipped(name: str) -> bool:
    """Editor, OS and Python droppings that never influence a build."""
    return name.startswith(".") or name in _SKIPPED_NAMES or name.endswith(_SKIPPED_SUFFIXES)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _kind(path: str | Path) -> str | None:
    """'file', 'dir' or None (missing or special), following symlinks; a loop is an error."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PlaybookError("symlink loop", file=_looping_link(path), hint=_LINK_HINT) from None
        return None
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else None


def _looping_link(path: str | Path) -> Path:
    """The first part of ``path`` (from the root down) that is a link going round in a loop."""
    path = Path(path)
    for part in reversed([path, *path.parents]):
        if os.path.islink(part):
            try:
                os.stat(part)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return part
    return path


Want = Literal["file", "dir", "any"]


def _exists(path: str, want: Want) -> bool:
    kind = _kind(path)
    return kind is not None if want == "any" else kind == want


_MAIN_NAMES = ("main.yml", "main.yaml", "main.json", "main")
_FIRST_FOUND_FOLDERS = ("files", "templates", "vars")
_GALAXY_NAME = re.compile(r"[\w-]+(\.[\w-]+)+")
_LOCAL_ROLE_HINT = "add it under roles/ or set roles_path in ansible.cfg"
_GALAXY_ROLE_HINT = "install it with ansible-galaxy into a roles path in the project"


def _main_file(folder: Path, entry: str | None) -> list[Path]:
    """Candidates for a role's ``tasks/main`` (or ``tasks_from``) in Ansible's order."""
    if entry is None:
        return [folder / name for name in _MAIN_NAMES]
    return [folder / f"{entry}{ext}" for ext in ("", ".yml", ".yaml", ".json")]


@dataclass(frozen=True)
class _Requirements:
    """The roles and collections a Galaxy requirements file installs."""

    file: Path | None = None
    roles: frozenset[str] = frozenset()
    collections: frozenset[str] = frozenset()

    @classmethod
    def read(cls, path: Path) -> _Requirements:
        data = load_yaml(path)
        roles: Any = data if isinstance(data, list) else []
        collections: Any = []
        if isinstance(data, dict):
            roles, collections = data.get("roles") or [], data.get("collections") or []
        names = {role_name(entry) for entry in (roles if isinstance(roles, list) else [])}
        colls = {entry.get("name") if isinstance(entry, dict) else entry
                 for entry in (collections if isinstance(collections, list) else [])}
        return cls(path, frozenset(n for n in names if isinstance(n, str)),
                   frozenset(c for c in colls if isinstance(c, str)))

    def installs(self, role: str) -> bool:
        """True when ``role`` (legacy or ``ns.coll.role``) comes from this file."""
        fq = split_fqcr(role)
        return role in self.roles or (fq is not None and fq[0] in self.collections)


@dataclass(frozen=True)
class _Where:
    """Where a task runs from; it decides how Ansible resolves its relative paths."""

    playbook_dir: Path
    role: Path | None = None
    parents: tuple[Path, ...] = ()  # roles that pulled this role in, innermost first
    handlers: bool = False
    collections: tuple[str, ...] = ()  # the ``collections`` search list in effect


# --------------------------------------------------------------------------- walker


class _Walker:
    """Follows playbooks, plays, task files and roles, collecting the files they read."""

    def __init__(self, role_dirs: Sequence[Path], collections: Collections, *,
                 extra_vars: Mapping[str, str] | None = None, galaxy: _Requirements = _Requirements(),
                 install_to: Path | None = None) -> None:
        self.role_dirs = tuple(role_dirs)
        self.collections = collections
        self.extra_vars = dict(extra_vars or {})
        self.galaxy = galaxy
        self.install_to = install_to  # where a missing collection should be installed
        self.files: set[Path] = set()
        self.warnings: dict[tuple[str, str], str] = {}
        self._visited: set[tuple[Path, _Where | None]] = set()
        self._roles_done: set[Path] = set()
        self._parsed: dict[Path, Any] = {}
        self._trees: dict[tuple[Path, bool], list[Path]] = {}
        self._collections_used: set[str] = set()

    # -- bookkeeping

    def _load(self, path: Path) -> Any:
        if path not in self._parsed:
            self._parsed[path] = load_yaml(path)
        return self._parsed[path]

    def _first_visit(self, path: Path, where: _Where | None) -> bool:
        """Record ``path``; False when it was already followed (this also stops include cycles).

        The roles that pulled a role in do not count here: they only add their own
        folders to the search for templates and files, and those folders are inputs
        already. Following a role's files once per chain of dependants would cost
        the square of the chain's length.
        """
        self.files.add(path)
        key = (path, replace(where, parents=()) if where is not None else None)
        if key in self._visited:
            return False
        self._visited.add(key)
        return True

    def _tree(self, folder: Path, *, recursive: bool = True) -> list[Path]:
        """The files of ``folder``, walked once per closure however often it is named.

        A folder inside one already walked (a role's ``files/static/``) is taken from
        that walk when it lists any of its files.
        """
        key = (folder, recursive)
        if key not in self._trees:
            found = self._from_walked(folder) if recursive else None
            self._trees[key] = found or inputs.tree(folder, recursive=recursive, skip=_skipped)
        return self._trees[key]

    def _from_walked(self, folder: Path) -> list[Path] | None:
        text = str(folder)
        for (walked, recursive), files in self._trees.items():
            if recursive and text.startswith(str(walked) + os.sep):
                rel = text[len(str(walked)) + 1:]
                if any(_skipped(part) for part in rel.split(os.sep)):
                    return None  # named explicitly, though the walk above left it out
                prefix = text + os.sep
                return [path for path in files if str(path).startswith(prefix)]
        return None

    def _add(self, path: Path) -> None:
        """A file, or every file in a folder; nothing when it does not exist."""
        kind = _kind(path)
        if kind == "dir":
            self.files.update(self._tree(path))
        elif kind == "file":
            self.files.add(path)

    def _warn(self, referrer: Path, line: int, expression: str, text: str) -> None:
        where = f"{referrer}:{line}" if line else str(referrer)
        self.warnings.setdefault((str(referrer), expression), f"{where}: {text}")

    # -- resolution

    def _resolve(self, keyword: str, value: Any, referrer: Path, line: int, where: _Where,
                 candidates: Callable[[str], list[str]], *, want: Want = "file",
                 required: bool = True) -> Path | None:
        """The first existing candidate for ``value``, after Jinja and magic variables.

        None when the value is dynamic (its folder is added instead) or optional and absent.
        """
        if not isinstance(value, str) or not value.strip():
            raise PlaybookError(f"{keyword} needs a file name", file=referrer,
                                hint=f"give {keyword} a path (line {line})" if line else f"give {keyword} a path")
        value = self._expand_magic(value.strip(), where)
        expanded = self._expand_extra(value)
        if expanded != value:
            value = expanded
            # A path handed in by the build (--extra-vars) that points outside the
            # playbook tree is the build's to track (e.g. a wheelhouse it fills).
            if Path(value).is_absolute() and not _inside(_norm(value), where.playbook_dir):
                return None
        if has_jinja(value):
            self._depend_on_folder(keyword, value, referrer, line, where, candidates)
            return None
        tried = candidates(os.path.expanduser(value))
        for text in tried:
            if _exists(text, want):
                path = Path(text)
                self._add(path)
                return path
        if required:
            raise PlaybookError(f"{keyword} '{value}' not found", file=referrer,
                                hint="create it or fix the path (looked in: "
                                     + ", ".join(map(str, tried)) + ")")
        return None

    def _expand_extra(self, value: str) -> str:
        """Replace ``{{ name }}`` for variables the build passes with --extra-vars."""
        if not self.extra_vars:
            return value

        def sub(match: re.Match[str]) -> str:
            return self.extra_vars.get(match.group(1), match.group(0))

        return EXTRA.sub(sub, value)

    @staticmethod
    def _expand_magic(value: str, where: _Where) -> str:
        """Replace ``{{ playbook_dir }}``/``{{ role_path }}``: they are known before run time."""
        known = {"playbook_dir": where.playbook_dir, "role_path": where.role}

        def sub(match: re.Match[str]) -> str:
            path = known[match.group(1)]
            return str(path) if path is not None else match.group(0)

        return MAGIC.sub(sub, value)

    def _shown(self, folder: Path, where: _Where) -> str:
        """A folder for a warning: relative to the playbook's folder when inside it."""
        if _inside(folder, where.playbook_dir):
            rel = os.path.relpath(folder, where.playbook_dir)
            return "the playbook's folder" if rel == "." else rel + "/"
        return str(folder) + "/"

    def _depend_on_folder(self, keyword: str, value: str, referrer: Path, line: int, where: _Where,
                          candidates: Callable[[str], list[str]], *, shown: str | None = None) -> None:
        """A dynamic path: depend on the folder that can contain it and say so once."""
        rel = literal_folder(value)
        found = next((p for p in candidates(os.path.expanduser(rel)) if _kind(p) == "dir"), None)
        folder = Path(found) if found is not None else None
        shown = shown or f"{keyword} '{value}'"
        text = f"{shown} is dynamic; "
        if folder is None:
            text += f"no folder '{rel}' exists for it: nothing tracked"
        elif Path(rel).is_absolute() and not any(
                _inside(folder, root) for root in (where.playbook_dir, where.role) if root):
            text += f"{folder} is outside the project: not tracked"
        elif _inside(where.playbook_dir, folder):
            # The whole playbook folder would drag in everything beside it (even build
            # outputs); the files directly in it are what such a path can name.
            self.files.update(self._tree(folder, recursive=False))
            text += f"tracking the files directly in {self._shown(folder, where)}"
        else:
            self.files.update(self._tree(folder))
            text += f"tracking every file in {self._shown(folder, where)}"
        self._warn(referrer, line, shown, text)

    def _include_candidates(self, target: str, referrer: Path, where: _Where) -> list[str]:
        """Task files: beside the including file, then the role, then the playbook folder."""
        bases = [referrer.parent]
        if where.role is not None:
            bases += [where.role / ("handlers" if where.handlers else "tasks"), where.role]
        bases.append(where.playbook_dir)
        return list(dict.fromkeys(_join(base, target) for base in bases))

    def _needle_candidates(self, folder: str, source: str, referrer: Path,
                           where: _Where) -> list[str]:
        """Ansible's search for supporting files (``templates/``, ``files/``, ``vars/``).

        The role, then the roles that pulled it in, then the task file's folder, then
        the playbook folder; each first with the ``folder`` sub-folder, then without.
        """
        stack = [where.role, *where.parents] if where.role is not None else []
        bases = _unique([*stack, referrer.parent, where.playbook_dir])
        return list(dict.fromkeys(path for base in bases
                                  for path in (_join(base, folder, source), _join(base, source))))

    def _role_bases(self, where: _Where, basedir: Path | None) -> list[Path]:
        """Role search folders in Ansible's order."""
        extra = [basedir] if basedir is not None else []
        return _unique([where.playbook_dir / "roles", *self.role_dirs, *extra, where.playbook_dir])

    # -- collections

    def _use_collection(self, name: str) -> Path | None:
        """An installed collection whose code runs: its plugins and metadata are inputs."""
        if name in SYNTHETIC:
            return None
        path = self.collections.find(name)
        if path is not None and name not in self._collections_used:
            self._collections_used.add(name)
            for rel in COLLECTION_FILES:
                self._add(path / rel)
            self._add(path / "plugins")
        return path

    def _expressions(self, value: Any, referrer: Path, line: int, where: _Where) -> None:
        """Lookups of files and collection plugins named inside Jinja expressions."""
        if value is None:
            return
        texts = list(strings(value))
        if isinstance(value, dict):  # conditions are Jinja expressions written without braces
            texts += ["{{ " + text + " }}" for key in CONDITIONS for text in str_list(value.get(key))
                      if not has_jinja(text)]
        for text in texts:
            if not has_jinja(text):
                continue
            for match in LOOKUP.finditer(text):
                self._lookup_match(match, text, referrer, line, where)
            for match in JINJA_FQCN.finditer(text):
                self._use_collection(f"{match.group(1)}.{match.group(2)}")
        if isinstance(value, dict):
            for key, kind in LOOP_LOOKUPS.items():
                for term in str_list(value.get(key)):
                    if has_jinja(term):
                        self._depend_on_folder(key, term, referrer, line, where, self._lookup_folders(kind, referrer,
                                                                                                    where))
                    else:
                        self._lookup(kind, term, referrer, line, where)
            self._first_found(value.get("with_first_found"), referrer, where)

    def _lookup_folders(self, kind: str, referrer: Path, where: _Where) -> Callable[[str], list[str]]:
        folder = "templates" if kind == "template" else "files"
        return lambda rel: self._needle_candidates(folder, rel, referrer, where)

    def _lookup_match(self, match: re.Match[str], text: str, referrer: Path, line: int, where: _Where) -> None:
        kind = match.group(2)
        term = first_argument(text, match.end())
        literal = QUOTED.fullmatch(term)
        if literal is not None and not has_jinja(literal.group(2)):
            self._lookup(kind, literal.group(2), referrer, line, where)
            return
        if not term:
            return
        # An expression: the literal it starts with (if any) names the folder.
        start = QUOTED.match(term)
        prefix = start.group(2) if start is not None and not has_jinja(start.group(2)) else ""
        self._depend_on_folder(f"lookup('{kind}')", prefix + "{{ ? }}", referrer, line, where,
                               self._lookup_folders(kind, referrer, where), shown=f"lookup('{kind}', {term})")

    def _lookup(self, kind: str, term: str, referrer: Path, line: int, where: _Where) -> None:
        """A literal ``lookup('file'|'template'|'fileglob', term)``."""
        if kind == "fileglob":
            # The glob only matches files directly in its folder.
            folder = os.path.dirname(term)
            hit = next((p for p in self._needle_candidates("files", folder, referrer, where)
                        if _kind(p) == "dir"), None)
            if hit is not None:
                self.files.update(self._tree(Path(hit), recursive=False))
            return
        tried = self._needle_candidates("files" if kind == "file" else "templates",
                                        os.path.expanduser(term), referrer, where)
        hit = next((p for p in tried if _kind(p) == "file"), None)
        if hit is not None:
            self.files.add(Path(hit))
        else:
            self._warn(referrer, line, term, f"lookup('{kind}', '{term}') names no existing file: not tracked")

    def _first_found(self, value: Any, referrer: Path, where: _Where) -> None:
        """``with_first_found``: every literal candidate that exists (which one wins is run time)."""
        if value is None:
            return
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            names = str_list(entry.get("files")) if isinstance(entry, dict) else str_list(entry)
            paths = str_list(entry.get("paths")) if isinstance(entry, dict) else []
            for name in (n for n in names if not has_jinja(n)):
                if paths:
                    tried = [_join(where.playbook_dir, p, name) for p in paths if not has_jinja(p)]
                else:
                    tried = [c for f in _FIRST_FOUND_FOLDERS for c in self._needle_candidates(f, name, referrer,
                                                                                              where)]
                hit = next((p for p in tried if _kind(p) == "file"), None)
                if hit is not None:
                    self.files.add(Path(hit))

    # -- playbooks and plays

    def playbook(self, path: Path, collection: str | None = None) -> None:
        """Follow one playbook file and everything its plays use."""
        if not self._first_visit(path, None):
            return
        plays = self._load(path)
        if not isinstance(plays, list):
            raise PlaybookError("a playbook must be a list of plays", file=path,
                                hint="start the file with '- hosts: ...'")
        if not plays:
            raise PlaybookError("a playbook must contain at least one play", file=path,
                                hint="add a play or remove the file")
        folder = path.parent
        if collection is None:
            self.collections.add_playbook_dir(folder)
        where = _Where(playbook_dir=folder, collections=(collection,) if collection else ())
        # Read by Ansible for every playbook: variables and plugins beside it, and the
        # requirement files that tools installing roles for it read.
        for name in ("group_vars", "host_vars", *PLUGIN_FOLDERS):
            self._add(folder / name)
        for name in ("roles/requirements.yml", "roles/requirements.yaml",
                     "collections/requirements.yml", "collections/requirements.yaml"):
            self._add(folder / name)
        for play in plays:
            if not isinstance(play, dict):
                raise PlaybookError("a playbook entry must be a play or an import_playbook",
                                    file=path, hint="make each list item a mapping")
            target = pick(play, "import_playbook")
            if target is not None:
                self._import_playbook(target, path, line_of(play), where)
            else:
                self._play(play, path, where)

    def _import_playbook(self, target: Any, referrer: Path, line: int, where: _Where) -> None:
        fq = split_fqcr(target) if isinstance(target, str) else None
        if fq is not None:
            home = self._use_collection(fq[0])
            if home is not None:
                stem = home / "playbooks" / fq[1]
                found = next((p for p in (stem.with_name(stem.name + ext) for ext in (".yml", ".yaml", ""))
                              if _kind(p) == "file"), None)
                if found is not None:
                    self.playbook(found, collection=fq[0])
                    return
        found = self._resolve("import_playbook", target, referrer, line, where,
                              lambda rel: [_join(referrer.parent, rel)])
        if found is not None:
            self.playbook(found)

    def _play(self, play: dict[Any, Any], referrer: Path, where: _Where) -> None:
        """A play: its vars files, roles, tasks and handlers, in the order Ansible runs them."""
        collections = [c for c in str_list(play.get("collections")) if c not in SYNTHETIC]
        if collections:
            where = replace(where, collections=(*collections, *where.collections))
            for name in collections:
                self._use_collection(name)
        self._vars_files(play.get("vars_files"), referrer, where)
        self._expressions(play.get("vars"), referrer, line_of(play, "vars"), where)
        roles = play.get("roles") or []
        if not isinstance(roles, list):
            raise PlaybookError("roles must be a list", file=referrer, hint="write roles: [name, ...]")
        for index, entry in enumerate(roles):
            self._role(role_name(entry), referrer, line_of(roles, index), where)
        for section in ("pre_tasks", "tasks", "post_tasks"):
            self._tasks(play.get(section), referrer, where)
        self._tasks(play.get("handlers"), referrer, replace(where, handlers=True))

    def _vars_files(self, entries: Any, referrer: Path, where: _Where) -> None:
        """``vars_files``: each entry is a file, or a list of alternatives (first found wins)."""
        if entries is None:
            return
        entries = entries if isinstance(entries, list) else [entries]
        for number, entry in enumerate(entries):
            options = entry if isinstance(entry, list) else [entry]
            line = line_of(entries, number)
            for index, option in enumerate(options):
                last = index == len(options) - 1
                found = self._resolve("vars_files", option, referrer, line, where,
                                      lambda rel: [_join(where.playbook_dir, rel)], required=last)
                if found is not None or (isinstance(option, str) and has_jinja(option)):
                    break

    # -- tasks

    def _task_file(self, path: Path, where: _Where) -> None:
        """An included/imported task (or handler) file."""
        if not self._first_visit(path, where):
            return
        tasks = self._load(path)
        if tasks is not None and not isinstance(tasks, list):
            raise PlaybookError("a task file must be a list of tasks", file=path,
                                hint="start each task with '- name: ...'")
        self._tasks(tasks, path, where)

    def _tasks(self, tasks: Any, referrer: Path, where: _Where) -> None:
        if tasks is None:
            return
        if not isinstance(tasks, list):
            raise PlaybookError("expected a list of tasks", file=referrer, hint="write tasks as a YAML list")
        for task in tasks:
            if not isinstance(task, dict):
                raise PlaybookError(f"a task must be a mapping, not {task!r:.60}", file=referrer,
                                    hint="write each task as '- name: ...' with a module")
            self._task(task, referrer, where)

    def _task(self, task: dict[Any, Any], referrer: Path, where: _Where) -> None:
        line = line_of(task)
        for key in BLOCK_KEYS:
            if key in task:
                self._tasks(task[key], referrer, where)
        for module in task_modules(task):
            fq = split_fqcr(module)
            if fq is not None:
                self._use_collection(fq[0])
        action = task_action(task)
        if action is not None:
            name, args = action
            if name in TASK_INCLUDES:
                self._include_tasks(name, args, referrer, line, where)
            elif name in ROLE_INCLUDES:
                self._role(args.get("name") or args.get("role"), referrer, line, where,
                           tasks_from=args.get("tasks_from"), handlers_from=args.get("handlers_from"))
            elif name == "include_vars":
                self._include_vars(args, referrer, line, where)
            else:
                self._src_file(name, args, referrer, line, where)
        self._expressions({k: v for k, v in task.items() if k not in BLOCK_KEYS}, referrer, line, where)

    def _include_tasks(self, keyword: str, args: dict[str, Any], referrer: Path, line: int,
                       where: _Where) -> None:
        target = args.get("file") or args.get("_raw_params")
        found = self._resolve(keyword, target, referrer, line, where,
                              lambda rel: self._include_candidates(rel, referrer, where))
        if found is not None:
            self._task_file(found, where)

    def _include_vars(self, args: dict[str, Any], referrer: Path, line: int, where: _Where) -> None:
        """``include_vars`` files are data: depend on them, never parse them."""
        if args.get("dir") is not None:
            # Ansible roots ``dir`` at the role's vars/ folder, else beside the task file.
            base = where.role / "vars" if where.role is not None else referrer.parent
            self._resolve("include_vars", args["dir"], referrer, line, where,
                          lambda rel: [_join(base, rel)], want="dir")
            return
        source = args.get("file") or args.get("_raw_params")
        if source is not None:
            self._resolve("include_vars", source, referrer, line, where,
                          lambda rel: self._needle_candidates("vars", rel, referrer, where))

    def _src_file(self, module: str, args: dict[str, Any], referrer: Path, line: int, where: _Where) -> None:
        """template/copy/script/unarchive/...: the controller-side source file (or folder)."""
        source = script_path(args) if module == "script" else args.get("src")
        if not isinstance(source, str) or not source.strip() or "://" in source:
            return  # copy with content:, or an archive downloaded at run time
        remote = remote_source(module, args)
        if remote is True:
            return  # the file is on the target machine, not in the project
        self._resolve(f"{module} src", source, referrer, line, where,
                      lambda rel: self._needle_candidates(SRC_FOLDER[module], rel, referrer, where),
                      want="file" if module == "template" else "any", required=remote is False)

    # -- roles

    def _role(self, name: Any, referrer: Path, line: int, where: _Where, *, tasks_from: Any = None,
              handlers_from: Any = None, basedir: Path | None = None) -> None:
        """A role: its whole folder, its meta dependencies, and its task and handler files."""
        if not isinstance(name, str) or not name.strip():
            raise PlaybookError(f"a role entry needs a name, got {name!r:.60}", file=referrer,
                                hint="write 'role: <name>' or 'name: <name>'")
        name = self._expand_magic(name.strip(), where)
        bases = self._role_bases(where, basedir)
        if has_jinja(name):
            self._depend_on_folder("role", name, referrer, line, where,
                                   lambda rel: list(dict.fromkeys(_join(b, rel) for b in bases)))
            return
        found = self._find_role(name, referrer, line, where, bases)
        if found is None:
            return
        role_dir, collection = found
        meta_file, meta = self._role_meta(role_dir)
        own = (collection,) if collection else ()
        meta_collections = [c for c in str_list(meta.get("collections")) if c not in SYNTHETIC]
        chain = [p for p in (where.role, *where.parents) if p is not None and p != role_dir]
        # Roles do not inherit the play's collections: their own collection, then their meta's.
        inner = _Where(where.playbook_dir, role=role_dir, parents=tuple(_unique(chain)),
                       collections=tuple(dict.fromkeys((*own, *meta_collections))))
        if role_dir not in self._roles_done:
            self._roles_done.add(role_dir)
            self._add(role_dir)
            for coll in meta_collections:
                self._use_collection(coll)
            if meta_file is not None:
                self._role_dependencies(meta_file, meta, role_dir, inner)
        self._role_entry(name, role_dir, "tasks", tasks_from, referrer, line, inner)
        self._role_entry(name, role_dir, "handlers", handlers_from, referrer, line,
                         replace(inner, handlers=True))

    def _find_role(self, name: str, referrer: Path, line: int, where: _Where,
                   bases: list[Path]) -> tuple[Path, str | None] | None:
        """The role's folder and collection, as ansible-core finds it: collections first.

        None when the role needs no files from the project: it comes with the ``ansible``
        package, or the build installs it from its requirements file (a warning says so).
        """
        fq = split_fqcr(name)
        searched = [(fq[0], fq[1])] if fq else [(c, name) for c in where.collections]
        for coll, resource in searched:
            home = self.collections.find(coll)
            if home is not None and _kind(home / "roles" / resource) == "dir":
                self._use_collection(coll)
                return _norm(home / "roles" / resource), coll
            bundled = self.collections.bundled(coll) if home is None else None
            if bundled is not None and _kind(bundled / "roles" / resource) == "dir":
                return None  # shipped with Ansible itself: a tool, like its modules
        role_dir = next((p for p in (_join(b, os.path.expanduser(name)) for b in bases) if _kind(p) == "dir"),
                        None)
        if role_dir is not None:
            return Path(role_dir), None
        if self.galaxy.installs(name):
            self._warn(referrer, line, name, f"role '{name}' is installed from {self.galaxy.file} at build "
                                             "time: it counts by that file only")
            return None
        if fq is not None:
            raise self._missing_collection_role(name, fq[0], referrer)
        hint = _GALAXY_ROLE_HINT if _GALAXY_NAME.fullmatch(name) else _LOCAL_ROLE_HINT
        raise PlaybookError(f"role '{name}' not found (looked in: {', '.join(map(str, bases))})",
                            file=referrer, hint=hint)

    def _missing_collection_role(self, name: str, coll: str, referrer: Path) -> PlaybookError:
        home = self.collections.find(coll)
        if home is not None:
            return PlaybookError(f"role '{name}' not found in collection {coll} ({home})", file=referrer,
                                 hint="check the role name, or update the collection")
        roots = self.collections.roots()
        target = self.install_to or roots[0]
        return PlaybookError(
            f"role '{name}' not found: collection {coll} is not installed (looked in: {', '.join(map(str, roots))})",
            file=referrer, hint=f"install it with 'ansible-galaxy collection install -p {target} {coll}'")

    def _role_meta(self, role_dir: Path) -> tuple[Path | None, dict[Any, Any]]:
        """The role's ``meta/main`` file and its content (empty when there is none)."""
        meta_file = next((p for p in _main_file(role_dir / "meta", None) if _kind(p) == "file"), None)
        if meta_file is None:
            return None, {}
        meta = self._load(meta_file)
        if meta is None:
            return meta_file, {}
        if not isinstance(meta, dict):
            raise PlaybookError("role meta must be a mapping", file=meta_file,
                                hint="write 'dependencies: [...]' at the top level")
        return meta_file, meta

    def _role_dependencies(self, meta_file: Path, meta: dict[Any, Any], role_dir: Path, where: _Where) -> None:
        """``meta/main.yml`` dependencies, searched also beside the depending role."""
        deps = meta.get("dependencies") or []
        if not isinstance(deps, list):
            raise PlaybookError("dependencies must be a list", file=meta_file,
                                hint="write 'dependencies: [role, ...]'")
        for index, dep in enumerate(deps):
            self._role(role_name(dep), meta_file, line_of(deps, index), where, basedir=role_dir.parent)

    def _role_entry(self, name: str, role_dir: Path, folder: str, entry: Any, referrer: Path, line: int,
                    where: _Where) -> None:
        """Parse a role's ``tasks``/``handlers`` entry file (main, or ``*_from``)."""
        keyword = f"{folder}_from"
        if entry is not None:
            if not isinstance(entry, str) or not entry.strip():
                raise PlaybookError(f"{keyword} must be a file name", file=referrer,
                                    hint=f"write {keyword}: <file>")
            entry = self._expand_magic(entry.strip(), where)
            if has_jinja(entry):  # the folder is already in: it is part of the role
                self._depend_on_folder(keyword, entry, referrer, line, where,
                                       lambda rel: [_join(role_dir, folder, rel)])
                return
        tried = _main_file(role_dir / folder, entry)
        found = next((p for p in tried if _kind(p) == "file"), None)
        if found is not None:
            self._task_file(_norm(found), where)
        elif entry is not None:
            raise PlaybookError(f"{keyword} '{entry}' not found in role '{name}'", file=referrer,
                                hint=f"create it or fix the name (looked in: {', '.join(map(str, tried))})")


# --------------------------------------------------------------------------- API


def _required(path: Path, what: str, setting: str) -> Path:
    """An input the caller names explicitly: it must exist."""
    path = _norm(path)
    if _kind(path) is None:
        raise PlaybookError(f"{what} not found", file=path, hint=f"check the path ({setting})")
    return path


def _vars_from_files(files: Sequence[Path]) -> dict[str, str]:
    """Top-level string values of ``--extra-vars @file`` files (they can fill in paths)."""
    found: dict[str, str] = {}
    for path in files:
        data = load_yaml(path) if _kind(path) == "file" else None
        if isinstance(data, dict):  # a vault-encrypted file reads as one string: nothing to use
            found.update({str(k): v for k, v in data.items() if isinstance(v, str)})
    return found


def playbook_closure(playbook: Path, *, roles_path: Sequence[Path] = (),
                     ansible_cfg: Path | None = None,
                     extra_vars: Mapping[str, str] | None = None,
                     inventories: Sequence[Path] = (),
                     extra_var_files: Sequence[Path] = (),
                     galaxy_file: Path | None = None,
                     env: Mapping[str, str] | None = None) -> PlaybookClosure:
    """Every file ``playbook`` depends on, as absolute file paths.

    ``roles_path`` folders are searched for roles after ``<playbook dir>/roles`` and before
    the ``roles_path`` of ``ansible_cfg`` (default: ``ansible.cfg`` beside the playbook).
    ``extra_vars`` (what the build passes with --extra-vars) fill in ``{{ name }}`` in paths,
    after the string values of ``extra_var_files`` (``--extra-vars @file``). ``inventories``
    (files or folders) count with the ``group_vars``/``host_vars`` beside them;
    ``galaxy_file`` is the requirements file the build installs roles and collections from.
    ``env`` (default: this process's environment) is what Ansible will see: it can override
    ansible.cfg's roles, plugin and collection paths.
    """
    path = _norm(playbook)
    if _kind(path) != "file":
        raise PlaybookError("playbook not found", file=path,
                            hint="check the playbook path (playbook_file of the ansible provisioner)")
    cfg: Path | None
    if ansible_cfg is not None:
        cfg = _norm(ansible_cfg)
        if _kind(cfg) != "file":
            raise PlaybookError("ansible.cfg not found", file=cfg, hint="check the ansible_cfg path")
    else:
        cfg = path.parent / "ansible.cfg" if _kind(path.parent / "ansible.cfg") == "file" else None
    settings = AnsibleSettings(cfg, os.environ if env is None else env)
    galaxy = _required(galaxy_file, "galaxy file", "galaxy_file") if galaxy_file is not None else None
    var_files = [_required(p, "extra vars file", "--extra-vars @file") for p in extra_var_files]
    inventory = [_required(p, "inventory", "inventory_file") for p in inventories]

    role_dirs = [_norm(p) for p in roles_path] + settings.roles_path()
    install_to = next(iter(settings.configured_in_cfg()), path.parent / "collections")
    walker = _Walker(_unique(role_dirs), Collections(settings.collection_roots()),
                     extra_vars={**_vars_from_files(var_files), **(extra_vars or {})},
                     galaxy=_Requirements.read(galaxy) if galaxy is not None else _Requirements(),
                     install_to=install_to)
    for extra in (cfg, galaxy, *var_files):
        if extra is not None:
            walker.files.add(extra)
    for folder in settings.plugin_folders():
        walker._add(folder)
    for source in inventory:
        walker._add(source)
        base = source if _kind(source) == "dir" else source.parent
        for name in ("group_vars", "host_vars"):
            walker._add(base / name)
    walker.playbook(path)
    return PlaybookClosure(playbook=path, files=frozenset(walker.files),
                           warnings=tuple(walker.warnings.values()))
