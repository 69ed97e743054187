"""Static file closure of an Ansible playbook.

Every controller-side file a playbook can read (task files, roles, templates, variable
files, ansible.cfg) is a dependency of the image the playbook provisions. Paths are
resolved in the order ansible-core uses; a path that needs run-time values (Jinja)
widens to the folder that can hold it, with a warning.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from vaultdoit.errors import PlaybookError
from vaultdoit.model import PlaybookClosure
from vaultdoit.yamlio import AnsibleLoader, load_yaml

__all__ = ["AnsibleLoader", "load_yaml", "playbook_closure"]  # the YAML reader lives in yamlio

# --------------------------------------------------------------------------- paths

_SKIPPED_NAMES = ("__pycache__",)
_SKIPPED_SUFFIXES = (".pyc", ".retry")


def _norm(path: str | Path) -> Path:
    """Absolute and normalised, without resolving symlinks (keep the user's paths)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def _unique(paths: Iterable[Path]) -> list[Path]:
    """Paths in first-seen order without repeats."""
    return list(dict.fromkeys(paths))


def _skipped(name: str) -> bool:
    """Editor, OS and Python droppings that never influence a build."""
    return name.startswith(".") or name in _SKIPPED_NAMES or name.endswith(_SKIPPED_SUFFIXES)


def _tree(folder: Path, *, recursive: bool = True) -> list[Path]:
    """Every file under ``folder``, sorted; symlinked folders are followed once."""
    found: list[Path] = []
    seen = {os.path.realpath(folder)}
    for root, dirs, names in os.walk(folder, followlinks=True):
        keep = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            if not _skipped(name) and real not in seen:  # a link back up would loop forever
                seen.add(real)
                keep.append(name)
        dirs[:] = keep if recursive else []
        found.extend(Path(root, name) for name in names
                     if not _skipped(name) and os.path.isfile(os.path.join(root, name)))
    return sorted(found)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# --------------------------------------------------------------------------- Jinja, free-form args

_JINJA = re.compile(r"{{|{%")
_EXTRA = re.compile(r"{{-?\s*([A-Za-z_]\w*)\s*-?}}")
_MAGIC = re.compile(r"{{-?\s*(playbook_dir|role_path)\s*-?}}")
_KEY = re.compile(r"([A-Za-z_]\w*)=(.*)", re.S)
_OPEN, _CLOSE = ("{{", "{%", "{#"), ("}}", "%}", "#}")


def _has_jinja(text: str) -> bool:
    return _JINJA.search(text) is not None


def _literal_folder(text: str) -> str:
    """The folder part written before the first Jinja expression ('' if none)."""
    match = _JINJA.search(text)
    head = text[: match.start()] if match else text
    if "/" not in head:
        return ""
    return head.rsplit("/", 1)[0] or "/"


def _split_args(text: str) -> list[str]:
    """Split free-form module arguments on blanks outside quotes and Jinja blocks."""
    tokens: list[str] = []
    buf: list[str] = []
    quote, depth, i = "", 0, 0
    while i < len(text):
        pair, ch = text[i:i + 2], text[i]
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif pair in _OPEN or (pair in _CLOSE and depth):
            depth += 1 if pair in _OPEN else -1
            buf.append(pair)
            i += 2
            continue
        elif ch in "'\"" and not depth:
            quote = ch
        elif ch.isspace() and not depth:
            if buf:
                tokens.append("".join(buf))
                buf = []
            i += 1
            continue
        buf.append(ch)
        i += 1
    if buf:
        tokens.append("".join(buf))
    return tokens


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _parse_kv(text: str) -> dict[str, Any]:
    """``src=a dest=b`` style arguments; the rest goes to ``_raw_params`` like Ansible."""
    args: dict[str, Any] = {}
    raw: list[str] = []
    for token in _split_args(text):
        match = _KEY.fullmatch(token)
        if match:
            args[match.group(1)] = _unquote(match.group(2))
        else:
            raw.append(_unquote(token))
    if raw:
        args["_raw_params"] = " ".join(raw)
    return args


def _args(value: Any) -> dict[str, Any]:
    """Module arguments from the dict form or the free-form string."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return _parse_kv(value)
    return {}


def _flag(value: Any) -> bool | None:
    """A YAML/Ansible boolean; None when it is a Jinja expression decided at run time."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "on", "y", "1"):
        return True
    if text in ("no", "false", "off", "n", "0", ""):
        return False
    return None


# --------------------------------------------------------------------------- tasks

_PREFIXES = ("ansible.builtin.", "ansible.legacy.")
_BLOCK_KEYS = ("block", "rescue", "always")
_TASK_INCLUDES = frozenset({"include_tasks", "import_tasks"})
_ROLE_INCLUDES = frozenset({"include_role", "import_role"})
# Modules that read a controller file named by ``src``, and the role folder searched first.
_SRC_FOLDER = {"template": "templates", "copy": "files", "script": "files", "unarchive": "files"}
_ACTIONS = _TASK_INCLUDES | _ROLE_INCLUDES | {"include_vars"} | frozenset(_SRC_FOLDER)
_MAIN_NAMES = ("main.yml", "main.yaml", "main.json", "main")
_LOOKUP = re.compile(
    r"""\b(?:lookup|query|q)\(\s*(['"])(?:ansible\.builtin\.)?(file|template|fileglob)\1\s*,"""
    r"""\s*(['"])([^'"{}]+)\3""")
_LOOP_LOOKUPS = {"with_file": "file", "with_template": "template", "with_fileglob": "fileglob"}
_GALAXY_NAME = re.compile(r"[\w-]+(\.[\w-]+)+")
_LOCAL_ROLE_HINT = "add it under roles/ or set roles_path in ansible.cfg"
_GALAXY_ROLE_HINT = "install it with ansible-galaxy into a roles path in the project"

Want = Literal["file", "dir", "any"]


def _short(key: Any) -> str:
    """Module name without the ``ansible.builtin.``/``ansible.legacy.`` prefix."""
    name = str(key)
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _pick(mapping: dict[Any, Any], name: str) -> Any:
    """The value of ``name`` in any of its spellings (bare or FQCN), else None."""
    for key, value in mapping.items():
        if _short(key) == name:
            return value
    return None


def _task_action(task: dict[Any, Any]) -> tuple[str, dict[str, Any]] | None:
    """The module this task runs and its arguments, if it is one that reads files."""
    raw_args = task.get("args")
    extra: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
    for key, value in task.items():
        name = _short(key)
        if name in ("action", "local_action"):
            module, args = _action_keyword(value)
            name = _short(module)
        elif name in _ACTIONS:
            args = _args(value)
        else:
            continue
        return (name, {**extra, **args}) if name in _ACTIONS else None
    return None


def _action_keyword(value: Any) -> tuple[str, dict[str, Any]]:
    """The old ``action: template src=x`` / ``action: {module: template}`` spelling."""
    if isinstance(value, dict):
        return str(value.get("module", "")), {k: v for k, v in value.items() if k != "module"}
    module, _, rest = str(value or "").strip().partition(" ")
    return module, _parse_kv(rest)


def _strings(value: Any) -> Iterator[str]:
    """Every string nested in a task (for lookups written inside expressions)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _role_name(entry: Any) -> Any:
    """The name of a ``roles:``/``dependencies:`` entry (string or dict form)."""
    if not isinstance(entry, dict):
        return entry
    name = entry.get("role") or entry.get("name")
    if name is None and isinstance(entry.get("src"), str):
        # Galaxy requirement form: ``src: user.role,version`` or a repository URL.
        name = entry["src"].split(",")[0].rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return name


def _main_file(folder: Path, entry: str | None) -> list[Path]:
    """Candidates for a role's ``tasks/main`` (or ``tasks_from``) in Ansible's order."""
    if entry is None:
        return [folder / name for name in _MAIN_NAMES]
    return [folder / f"{entry}{ext}" for ext in ("", ".yml", ".yaml", ".json")]


@dataclass(frozen=True)
class _Where:
    """Where a task runs from; it decides how Ansible resolves its relative paths."""

    playbook_dir: Path
    role: Path | None = None
    parents: tuple[Path, ...] = ()  # roles that pulled this role in, innermost first
    handlers: bool = False


def _exists(path: Path, want: Want) -> bool:
    if want == "file":
        return path.is_file()
    if want == "dir":
        return path.is_dir()
    return path.exists()


# --------------------------------------------------------------------------- walker


class _Walker:
    """Follows playbooks, plays, task files and roles, collecting the files they read."""

    def __init__(self, role_dirs: Sequence[Path], extra_vars: Mapping[str, str] | None = None) -> None:
        self.role_dirs = tuple(role_dirs)
        self.extra_vars = dict(extra_vars or {})
        self.files: set[Path] = set()
        self.warnings: dict[tuple[str, str], str] = {}
        self._visited: set[tuple[Path, _Where | None]] = set()
        self._roles_done: set[Path] = set()
        self._parsed: dict[Path, Any] = {}

    # -- bookkeeping

    def _load(self, path: Path) -> Any:
        if path not in self._parsed:
            self._parsed[path] = load_yaml(path)
        return self._parsed[path]

    def _first_visit(self, path: Path, where: _Where | None) -> bool:
        """Record ``path``; False when it was already followed (this also stops include cycles)."""
        self.files.add(path)
        key = (path, where)
        if key in self._visited:
            return False
        self._visited.add(key)
        return True

    def _add(self, path: Path) -> None:
        self.files.update(_tree(path) if path.is_dir() else [path])

    def _warn(self, referrer: Path, expression: str, text: str) -> None:
        self.warnings.setdefault((str(referrer), expression), f"{referrer}: {text}")

    # -- resolution

    def _resolve(self, keyword: str, value: Any, referrer: Path, where: _Where,
                 candidates: Callable[[str], list[Path]], *, want: Want = "file",
                 required: bool = True) -> Path | None:
        """The first existing candidate for ``value``, after Jinja and magic variables.

        None when the value is dynamic (its folder is added instead) or optional and absent.
        """
        if not isinstance(value, str) or not value.strip():
            raise PlaybookError(f"{keyword} needs a file name", file=referrer,
                                hint=f"give {keyword} a path")
        value = self._expand_magic(value.strip(), where)
        expanded = self._expand_extra(value)
        if expanded != value:
            value = expanded
            # A path handed in by the build (--extra-vars) that points outside the
            # playbook tree is the build's to track (e.g. a wheelhouse it fills).
            if Path(value).is_absolute() and not _inside(_norm(value), where.playbook_dir):
                return None
        if _has_jinja(value):
            self._depend_on_folder(keyword, value, referrer, where, candidates)
            return None
        tried = candidates(os.path.expanduser(value))
        for path in tried:
            if _exists(path, want):
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

        return _EXTRA.sub(sub, value)

    @staticmethod
    def _expand_magic(value: str, where: _Where) -> str:
        """Replace ``{{ playbook_dir }}``/``{{ role_path }}``: they are known before run time."""
        known = {"playbook_dir": where.playbook_dir, "role_path": where.role}

        def sub(match: re.Match[str]) -> str:
            path = known[match.group(1)]
            return str(path) if path is not None else match.group(0)

        return _MAGIC.sub(sub, value)

    def _depend_on_folder(self, keyword: str, value: str, referrer: Path, where: _Where,
                          candidates: Callable[[str], list[Path]]) -> None:
        """A dynamic path: depend on the folder that can contain it and say so."""
        rel = _literal_folder(value)
        folder = next((p for p in candidates(os.path.expanduser(rel)) if p.is_dir()), None)
        text = f"{keyword} '{value}' uses Jinja and cannot be resolved statically; "
        if folder is None:
            text += f"no folder '{rel}' exists for it, so nothing is tracked for it"
        elif Path(rel).is_absolute() and not any(
                _inside(folder, root) for root in (where.playbook_dir, where.role) if root):
            text += f"{folder} is outside the project and is not tracked"
        elif _inside(where.playbook_dir, folder):
            # The whole playbook folder would drag in everything beside it (even build
            # outputs); the files directly in it are what such a path can name.
            self.files.update(_tree(folder, recursive=False))
            text += f"depending on the files directly in {folder}"
        else:
            self.files.update(_tree(folder))
            text += f"depending on every file in {folder}"
        self._warn(referrer, value, text)

    def _include_candidates(self, target: str, referrer: Path, where: _Where) -> list[Path]:
        """Task files: beside the including file, then the role, then the playbook folder."""
        bases = [referrer.parent]
        if where.role is not None:
            bases += [where.role / ("handlers" if where.handlers else "tasks"), where.role]
        bases.append(where.playbook_dir)
        return _unique(_norm(base / target) for base in bases)

    def _needle_candidates(self, folder: str, source: str, referrer: Path,
                           where: _Where) -> list[Path]:
        """Ansible's search for supporting files (``templates/``, ``files/``, ``vars/``).

        The role, then the roles that pulled it in, then the task file's folder, then
        the playbook folder; each first with the ``folder`` sub-folder, then without.
        """
        stack = [where.role, *where.parents] if where.role is not None else []
        bases = _unique([*stack, referrer.parent, where.playbook_dir])
        return _unique(_norm(path) for base in bases for path in (base / folder / source, base / source))

    def _role_bases(self, where: _Where, basedir: Path | None) -> list[Path]:
        """Role search folders in Ansible's order."""
        extra = [basedir] if basedir is not None else []
        return _unique([where.playbook_dir / "roles", *self.role_dirs, *extra, where.playbook_dir])

    # -- playbooks and plays

    def playbook(self, path: Path) -> None:
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
        where = _Where(playbook_dir=path.parent)
        for name in ("group_vars", "host_vars"):
            if (path.parent / name).is_dir():
                self._add(path.parent / name)
        for play in plays:
            if not isinstance(play, dict):
                raise PlaybookError("a playbook entry must be a play or an import_playbook",
                                    file=path, hint="make each list item a mapping")
            target = _pick(play, "import_playbook")
            if target is not None:
                self._import_playbook(target, path, where)
            else:
                self._play(play, path, where)

    def _import_playbook(self, target: Any, referrer: Path, where: _Where) -> None:
        found = self._resolve("import_playbook", target, referrer, where,
                              lambda rel: [_norm(referrer.parent / rel)])
        if found is not None:
            self.playbook(found)

    def _play(self, play: dict[Any, Any], referrer: Path, where: _Where) -> None:
        """A play: its vars files, roles, tasks and handlers, in the order Ansible runs them."""
        self._vars_files(play.get("vars_files"), referrer, where)
        self._lookups(play.get("vars"), referrer, where)
        roles = play.get("roles") or []
        if not isinstance(roles, list):
            raise PlaybookError("roles must be a list", file=referrer, hint="write roles: [name, ...]")
        for entry in roles:
            self._role(_role_name(entry), referrer, where)
        for section in ("pre_tasks", "tasks", "post_tasks"):
            self._tasks(play.get(section), referrer, where)
        self._tasks(play.get("handlers"), referrer, replace(where, handlers=True))

    def _vars_files(self, entries: Any, referrer: Path, where: _Where) -> None:
        """``vars_files``: each entry is a file, or a list of alternatives (first found wins)."""
        if entries is None:
            return
        for entry in entries if isinstance(entries, list) else [entries]:
            options = entry if isinstance(entry, list) else [entry]
            for index, option in enumerate(options):
                last = index == len(options) - 1
                found = self._resolve("vars_files", option, referrer, where,
                                      lambda rel: [_norm(where.playbook_dir / rel)], required=last)
                if found is not None or (isinstance(option, str) and _has_jinja(option)):
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
                raise PlaybookError(f"a task must be a mapping, not {task!r}", file=referrer,
                                    hint="write each task as '- name: ...' with a module")
            self._task(task, referrer, where)

    def _task(self, task: dict[Any, Any], referrer: Path, where: _Where) -> None:
        for key in _BLOCK_KEYS:
            if key in task:
                self._tasks(task[key], referrer, where)
        action = _task_action(task)
        if action is not None:
            name, args = action
            if name in _TASK_INCLUDES:
                self._include_tasks(name, args, referrer, where)
            elif name in _ROLE_INCLUDES:
                self._role(args.get("name") or args.get("role"), referrer, where,
                           tasks_from=args.get("tasks_from"), handlers_from=args.get("handlers_from"))
            elif name == "include_vars":
                self._include_vars(args, referrer, where)
            else:
                self._src_file(name, args, referrer, where)
        self._lookups({k: v for k, v in task.items() if k not in _BLOCK_KEYS}, referrer, where)

    def _include_tasks(self, keyword: str, args: dict[str, Any], referrer: Path, where: _Where) -> None:
        target = args.get("file") or args.get("_raw_params")
        found = self._resolve(keyword, target, referrer, where,
                              lambda rel: self._include_candidates(rel, referrer, where))
        if found is not None:
            self._task_file(found, where)

    def _include_vars(self, args: dict[str, Any], referrer: Path, where: _Where) -> None:
        """``include_vars`` files are data: depend on them, never parse them."""
        if args.get("dir") is not None:
            # Ansible roots ``dir`` at the role's vars/ folder, else beside the task file.
            base = where.role / "vars" if where.role is not None else referrer.parent
            self._resolve("include_vars", args["dir"], referrer, where,
                          lambda rel: [_norm(base / rel)], want="dir")
            return
        source = args.get("file") or args.get("_raw_params")
        if source is not None:
            self._resolve("include_vars", source, referrer, where,
                          lambda rel: self._needle_candidates("vars", rel, referrer, where))

    def _src_file(self, module: str, args: dict[str, Any], referrer: Path, where: _Where) -> None:
        """template/copy/script/unarchive: the controller-side source file (or folder)."""
        source = _script_path(args) if module == "script" else args.get("src")
        if not isinstance(source, str) or not source.strip() or "://" in source:
            return  # copy with content:, or an archive downloaded at run time
        remote = _flag(args.get("remote_src"))
        if module == "unarchive" and _flag(args.get("copy")) is False:
            remote = True  # the old spelling of remote_src: yes
        if remote is True:
            return  # the file is on the target machine, not in the project
        self._resolve(f"{module} src", source, referrer, where,
                      lambda rel: self._needle_candidates(_SRC_FOLDER[module], rel, referrer, where),
                      want="file" if module == "template" else "any", required=remote is False)

    def _lookups(self, value: Any, referrer: Path, where: _Where) -> None:
        """``lookup('file', 'x')``, ``with_file`` and friends with literal paths."""
        if value is None:
            return
        found = [(m.group(2), m.group(4)) for text in _strings(value) for m in _LOOKUP.finditer(text)]
        if isinstance(value, dict):
            for key, kind in _LOOP_LOOKUPS.items():
                terms = value.get(key)
                terms = terms if isinstance(terms, list) else [terms]
                found += [(kind, t) for t in terms if isinstance(t, str) and not _has_jinja(t)]
        for kind, term in found:
            self._lookup(kind, term, referrer, where)

    def _lookup(self, kind: str, term: str, referrer: Path, where: _Where) -> None:
        if kind == "fileglob":
            # The glob only matches files directly in its folder.
            folder = os.path.dirname(term)
            hit = next((p for p in self._needle_candidates("files", folder, referrer, where)
                        if p.is_dir()), None)
            if hit is not None:
                self.files.update(_tree(hit, recursive=False))
            return
        folder = "files" if kind == "file" else "templates"
        tried = self._needle_candidates(folder, os.path.expanduser(term), referrer, where)
        hit = next((p for p in tried if p.is_file()), None)
        if hit is not None:
            self.files.add(hit)
        else:
            self._warn(referrer, term, f"lookup('{kind}', '{term}') names no existing file; "
                                       "it is not tracked")

    # -- roles

    def _role(self, name: Any, referrer: Path, where: _Where, *, tasks_from: Any = None,
              handlers_from: Any = None, basedir: Path | None = None) -> None:
        """A role: its whole folder, its meta dependencies, and its task and handler files."""
        if not isinstance(name, str) or not name.strip():
            raise PlaybookError(f"a role entry needs a name, got {name!r}", file=referrer,
                                hint="write 'role: <name>' or 'name: <name>'")
        name = self._expand_magic(name.strip(), where)
        bases = self._role_bases(where, basedir)
        if _has_jinja(name):
            self._depend_on_folder("role", name, referrer, where,
                                   lambda rel: _unique(_norm(b / rel) for b in bases))
            return
        role_dir = next((p for p in (_norm(b / os.path.expanduser(name)) for b in bases) if p.is_dir()), None)
        if role_dir is None:
            hint = _GALAXY_ROLE_HINT if _GALAXY_NAME.fullmatch(name) else _LOCAL_ROLE_HINT
            raise PlaybookError(f"role '{name}' not found (looked in: {', '.join(map(str, bases))})",
                                file=referrer, hint=hint)
        chain = [p for p in (where.role, *where.parents) if p is not None and p != role_dir]
        inner = _Where(where.playbook_dir, role=role_dir, parents=tuple(_unique(chain)))
        if role_dir not in self._roles_done:
            self._roles_done.add(role_dir)
            self._add(role_dir)
            self._role_meta(role_dir, inner)
        self._role_entry(name, role_dir, "tasks", tasks_from, referrer, inner)
        self._role_entry(name, role_dir, "handlers", handlers_from, referrer,
                         replace(inner, handlers=True))

    def _role_meta(self, role_dir: Path, where: _Where) -> None:
        """``meta/main.yml`` dependencies, searched also beside the depending role."""
        meta_file = next((p for p in _main_file(role_dir / "meta", None) if p.is_file()), None)
        if meta_file is None:
            return
        meta = self._load(meta_file)
        if meta is None:
            return
        if not isinstance(meta, dict):
            raise PlaybookError("role meta must be a mapping", file=meta_file,
                                hint="write 'dependencies: [...]' at the top level")
        deps = meta.get("dependencies") or []
        if not isinstance(deps, list):
            raise PlaybookError("dependencies must be a list", file=meta_file,
                                hint="write 'dependencies: [role, ...]'")
        for dep in deps:
            self._role(_role_name(dep), meta_file, where, basedir=role_dir.parent)

    def _role_entry(self, name: str, role_dir: Path, folder: str, entry: Any, referrer: Path,
                    where: _Where) -> None:
        """Parse a role's ``tasks``/``handlers`` entry file (main, or ``*_from``)."""
        keyword = f"{folder}_from"
        if entry is not None:
            if not isinstance(entry, str) or not entry.strip():
                raise PlaybookError(f"{keyword} must be a file name", file=referrer,
                                    hint=f"write {keyword}: <file>")
            entry = self._expand_magic(entry.strip(), where)
            if _has_jinja(entry):  # the folder is already in: it is part of the role
                self._depend_on_folder(keyword, entry, referrer, where,
                                       lambda rel: [_norm(role_dir / folder / rel)])
                return
        tried = _main_file(role_dir / folder, entry)
        found = next((p for p in tried if p.is_file()), None)
        if found is not None:
            self._task_file(_norm(found), where)
        elif entry is not None:
            raise PlaybookError(f"{keyword} '{entry}' not found in role '{name}'", file=referrer,
                                hint=f"create it or fix the name (looked in: {', '.join(map(str, tried))})")


def _script_path(args: dict[str, Any]) -> str | None:
    """The local script of ``script: path args`` (free form) or ``script: {cmd: ...}``."""
    command = args.get("cmd") or args.get("_raw_params")
    if not isinstance(command, str):
        return None
    tokens = _split_args(command)
    return _unquote(tokens[0]) if tokens else None


# --------------------------------------------------------------------------- ansible.cfg


def _cfg_roles_path(cfg: Path) -> list[Path]:
    """``[defaults] roles_path`` of an ansible.cfg, relative to the cfg's folder."""
    # Same INI dialect as ansible-core (';' starts inline comments); no '%' interpolation.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    try:
        parser.read_string(cfg.read_text(encoding="utf-8"), source=str(cfg))
    except (configparser.Error, UnicodeDecodeError) as exc:
        problem = str(exc).splitlines()[0]
        raise PlaybookError(f"invalid ansible.cfg: {problem}", file=cfg, hint="fix the INI syntax") from exc
    value = parser.get("defaults", "roles_path", fallback="") or ""
    return [_norm(cfg.parent / os.path.expandvars(os.path.expanduser(part.strip())))
            for part in value.split(os.pathsep) if part.strip()]


# --------------------------------------------------------------------------- API


def playbook_closure(playbook: Path, *, roles_path: Sequence[Path] = (),
                     ansible_cfg: Path | None = None,
                     extra_vars: Mapping[str, str] | None = None) -> PlaybookClosure:
    """Every file ``playbook`` depends on, as absolute file paths.

    ``roles_path`` folders are searched for roles after ``<playbook dir>/roles`` and before
    the ``roles_path`` of ``ansible_cfg`` (default: ``ansible.cfg`` beside the playbook).
    ``extra_vars`` (what the build passes with --extra-vars) fill in ``{{ name }}`` in paths.
    """
    path = _norm(playbook)
    if not path.is_file():
        raise PlaybookError("playbook not found", file=path,
                            hint="check the playbook path (playbook_file of the ansible provisioner)")
    cfg: Path | None
    if ansible_cfg is not None:
        cfg = _norm(ansible_cfg)
        if not cfg.is_file():
            raise PlaybookError("ansible.cfg not found", file=cfg, hint="check the ansible_cfg path")
    else:
        cfg = path.parent / "ansible.cfg" if (path.parent / "ansible.cfg").is_file() else None
    role_dirs = [_norm(p) for p in roles_path] + (_cfg_roles_path(cfg) if cfg else [])
    walker = _Walker(_unique(role_dirs), extra_vars)
    if cfg is not None:
        walker.files.add(cfg)
    walker.playbook(path)
    return PlaybookClosure(playbook=path, files=frozenset(walker.files),
                           warnings=tuple(walker.warnings.values()))
