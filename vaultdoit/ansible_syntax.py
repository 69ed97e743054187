"""How Ansible's YAML names things: module arguments (dict or free form), Jinja in paths, task keywords.

Pure functions over parsed data; no file is read here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from vaultdoit.ansible_paths import split_fqcr

# --------------------------------------------------------------------------- Jinja, free-form args

_JINJA = re.compile(r"{{|{%")
EXTRA = re.compile(r"{{-?\s*([A-Za-z_]\w*)\s*-?}}")
MAGIC = re.compile(r"{{-?\s*(playbook_dir|role_path)\s*-?}}")
_KEY = re.compile(r"([A-Za-z_]\w*)=(.*)", re.S)
_OPEN, _CLOSE = ("{{", "{%", "{#"), ("}}", "%}", "#}")


def has_jinja(text: str) -> bool:
    return _JINJA.search(text) is not None


def literal_folder(text: str) -> str:
    """The folder part written before the first Jinja expression ('' if none)."""
    match = _JINJA.search(text)
    head = text[: match.start()] if match else text
    if "/" not in head:
        return ""
    return head.rsplit("/", 1)[0] or "/"


def split_args(text: str) -> list[str]:
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


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_kv(text: str) -> dict[str, Any]:
    """``src=a dest=b`` style arguments; the rest goes to ``_raw_params`` like Ansible."""
    args: dict[str, Any] = {}
    raw: list[str] = []
    for token in split_args(text):
        match = _KEY.fullmatch(token)
        if match:
            args[match.group(1)] = unquote(match.group(2))
        else:
            raw.append(unquote(token))
    if raw:
        args["_raw_params"] = " ".join(raw)
    return args


def module_args(value: Any) -> dict[str, Any]:
    """Module arguments from the dict form or the free-form string."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return parse_kv(value)
    return {}


def flag(value: Any) -> bool | None:
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
# Modules of other collections that read controller files like the builtin ones do.
_ALIASES = {"ansible.posix.patch": "patch", "ansible.posix.synchronize": "synchronize"}
BLOCK_KEYS = ("block", "rescue", "always")
# Task keywords whose values are Jinja expressions without braces.
CONDITIONS = ("when", "changed_when", "failed_when", "until")
TASK_INCLUDES = frozenset({"include_tasks", "import_tasks"})
ROLE_INCLUDES = frozenset({"include_role", "import_role"})
# Modules that read a controller file named by ``src``, and the role folder searched first.
SRC_FOLDER = {"template": "templates", "copy": "files", "script": "files", "unarchive": "files",
              "patch": "files", "assemble": "files", "synchronize": "files"}
_ACTIONS = TASK_INCLUDES | ROLE_INCLUDES | {"include_vars"} | frozenset(SRC_FOLDER)
# lookup('file', <term>, ...): the start of a lookup whose first term names a file.
LOOKUP = re.compile(r"""\b(?:lookup|query|q)\(\s*(['"])(?:ansible\.builtin\.)?(file|template|fileglob)\1\s*,\s*""")
QUOTED = re.compile(r"""(['"])([^'"]*)\1""")
LOOP_LOOKUPS = {"with_file": "file", "with_template": "template", "with_fileglob": "fileglob"}
# ns.coll.name inside a Jinja expression: a filter, test or lookup of a collection.
JINJA_FQCN = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\.([A-Za-z_]\w*)\.[A-Za-z_]\w*")


def short_name(key: Any) -> str:
    """Module name without the ``ansible.builtin.``/``ansible.legacy.`` prefix."""
    name = str(key)
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return _ALIASES.get(name, name)


def pick(mapping: dict[Any, Any], name: str) -> Any:
    """The value of ``name`` in any of its spellings (bare or FQCN), else None."""
    for key, value in mapping.items():
        if short_name(key) == name:
            return value
    return None


def task_action(task: dict[Any, Any]) -> tuple[str, dict[str, Any]] | None:
    """The module this task runs and its arguments, if it is one that reads files."""
    raw_args = task.get("args")
    extra: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
    for key, value in task.items():
        name = short_name(key)
        if name in ("action", "local_action"):
            module, args = action_keyword(value)
            name = short_name(module)
        elif name in _ACTIONS:
            args = module_args(value)
        else:
            continue
        return (name, {**extra, **args}) if name in _ACTIONS else None
    return None


def task_modules(task: dict[Any, Any]) -> Iterator[str]:
    """Fully qualified module names a task uses (as a key or through ``action:``)."""
    for key, value in task.items():
        name = str(key)
        if short_name(name) in ("action", "local_action"):
            name = action_keyword(value)[0]
        if split_fqcr(name) is not None:
            yield name


def action_keyword(value: Any) -> tuple[str, dict[str, Any]]:
    """The old ``action: template src=x`` / ``action: {module: template}`` spelling."""
    if isinstance(value, dict):
        return str(value.get("module", "")), {k: v for k, v in value.items() if k != "module"}
    module, _, rest = str(value or "").strip().partition(" ")
    return module, parse_kv(rest)


def remote_source(module: str, args: dict[str, Any]) -> bool | None:
    """Whether the module's ``src`` is on the target (True), the controller (False) or unknown."""
    if "remote_src" in args:
        return flag(args["remote_src"])
    if module == "unarchive" and "copy" in args:
        copy = flag(args["copy"])  # the old spelling: copy: no means remote_src: yes
        return None if copy is None else not copy
    if module == "assemble":
        return True  # assemble reads the target's files unless remote_src: no
    if module == "synchronize":
        mode = str(args.get("mode", "push")).strip()
        return None if has_jinja(mode) else mode == "pull"
    return False


def strings(value: Any) -> Iterator[str]:
    """Every string nested in a task (for lookups written inside expressions)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def role_name(entry: Any) -> Any:
    """The name of a ``roles:``/``dependencies:``/requirements entry (string or dict form)."""
    if not isinstance(entry, dict):
        # Galaxy's old requirement form: ``user.role,version``.
        return entry.split(",")[0].strip() if isinstance(entry, str) and "," in entry else entry
    name = entry.get("role") or entry.get("name")
    if name is None and isinstance(entry.get("src"), str):
        # Galaxy requirement form: ``src: user.role,version`` or a repository URL.
        name = entry["src"].split(",")[0].rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return name


def script_path(args: dict[str, Any]) -> str | None:
    """The local script of ``script: path args`` (free form) or ``script: {cmd: ...}``."""
    command = args.get("cmd") or args.get("_raw_params")
    if not isinstance(command, str):
        return None
    tokens = split_args(command)
    return unquote(tokens[0]) if tokens else None


def first_argument(text: str, start: int) -> str:
    """The expression of a call's argument that begins at ``start`` (up to ``,`` or ``)``)."""
    depth, quote = 0, ""
    for index in range(start, len(text)):
        ch = text[index]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}" and depth:
            depth -= 1
        elif ch in ",)" or text.startswith("}}", index):
            return text[start:index].strip()
    return text[start:].strip()


def str_list(value: Any) -> list[str]:
    """A string or a list of strings (other items dropped)."""
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, str)]
